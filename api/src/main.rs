#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::cli::exit_with(api::cli::main().await)
}
