#[tokio::main]
async fn main() -> anyhow::Result<()> {
    worker::cli::main().await
}
