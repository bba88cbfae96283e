#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::cli::exit_with(worker::cli::main().await)
}
