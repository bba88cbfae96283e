//! The `processor-sim` binary: a stand-in card gateway for local runs and tests.

use anyhow::Context;
use clap::Parser;
use processor_sim::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = Config::parse();
    common::telemetry::init(cfg.log.log_format);
    let listener = tokio::net::TcpListener::bind(cfg.bind)
        .await
        .with_context(|| format!("binding SIM_BIND={}", cfg.bind))?;
    processor_sim::serve(listener, common::shutdown::on_signal()).await
}
