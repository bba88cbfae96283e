#[tokio::main]
async fn main() -> anyhow::Result<()> {
    api::cli::main().await
}
