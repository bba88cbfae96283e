//! The `api` binary's subcommands: `serve` (default), `migrate`, `keys`,
//! `openapi`.
//!
//! Keys are of two kinds (see [`crate::http::auth`]; made by [`crate::keys`]):
//! `keys create` makes a merchant's key with merchant scopes, and refuses
//! `admin`; `keys create-operator` makes an operator's key, bound to no
//! merchant, for the dead-letter endpoints.

use anyhow::Context as _;
use clap::Parser as _;
use common::config::{BrokerArgs, DatabaseArgs};
use common::db::api_keys;
use common::domain::Scope;

use crate::config::ServeArgs;
use crate::keys::{create_key, create_operator_key, parse_name, parse_scope};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Create the database if needed and apply migrations, then exit.
    Migrate,
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Print the OpenAPI 3.1 document (as `GET /v1/openapi.json` serves it)
    /// and exit. Needs no database.
    Openapi,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum KeysCommand {
    /// Create a merchant's key; prints the secret on the last line (shown
    /// only once).
    Create {
        /// A label for the key.
        #[arg(long, value_parser = parse_name)]
        name: String,
        /// Comma-separated merchant scopes: payments:read, payments:write.
        /// (`admin` is not one: see `create-operator`.)
        #[arg(long, value_delimiter = ',', required = true, value_parser = parse_scope)]
        scopes: Vec<Scope>,
        /// Merchant name; created if new. Default: the default merchant.
        #[arg(long, default_value = api_keys::DEFAULT_MERCHANT, value_parser = parse_name)]
        merchant: String,
    },
    /// Create an operator's key: bound to no merchant, it reaches only the
    /// operator endpoints (`/v1/admin/…`). Prints the secret on the last line.
    CreateOperator {
        /// A label for the key (who or what holds it).
        #[arg(long, value_parser = parse_name)]
        name: String,
    },
    /// List keys (never their secrets).
    List,
    /// Revoke a key by id; requests with it fail with 401 at once.
    Revoke {
        /// The key id, as `keys list` prints it.
        id: uuid::Uuid,
    },
}

/// What `main` runs.
pub async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    match config.command {
        None | Some(Command::Serve) => common::telemetry::init(config.log.log_format),
        Some(_) => common::telemetry::init_quiet(config.log.log_format),
    }
    run(config).await
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    match config.command.clone().unwrap_or(Command::Serve) {
        Command::Serve => {
            let listener = tokio::net::TcpListener::bind(&config.serve.bind)
                .await
                .with_context(|| format!("binding API_BIND {}", config.serve.bind))?;
            let (pool, broker) = crate::server::connect(&config.database, &config.broker).await?;
            crate::server::serve(
                listener,
                pool,
                broker,
                config.serve,
                common::shutdown::on_signal(),
            )
            .await
        }
        Command::Migrate => {
            let pool = common::db::connect(&config.database).await?;
            common::db::migrate(&pool).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Openapi => {
            print!("{}", crate::openapi::json()?);
            Ok(())
        }
        Command::Keys { command } => {
            let pool = common::db::connect(&config.database).await?;
            common::db::migrate(&pool).await?;
            keys(&pool, command).await
        }
    }
}

async fn keys(pool: &sqlx::PgPool, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create {
            name,
            scopes,
            merchant,
        } => {
            let scopes: Vec<String> = scopes.iter().map(|s| s.as_str().to_owned()).collect();
            let (id, secret) = create_key(pool, &merchant, &name, &scopes).await?;
            println!(
                "created key {id} for merchant {merchant:?} with scopes {}",
                scopes.join(",")
            );
            println!("the secret is shown once; store it now:");
            println!("{secret}");
        }
        KeysCommand::CreateOperator { name } => {
            let (id, secret) = create_operator_key(pool, &name).await?;
            println!("created operator key {id} (no merchant; operator endpoints only)");
            println!("the secret is shown once; store it now:");
            println!("{secret}");
        }
        KeysCommand::List => {
            let mut table =
                common::cli::Table::new(&["id", "merchant", "name", "prefix", "scopes", "status"]);
            for key in api_keys::list(pool).await? {
                let status = match key.revoked_at {
                    Some(at) => format!("revoked {}", at.to_rfc3339()),
                    None => "active".into(),
                };
                table.row(&[
                    &key.id.to_string(),
                    key.merchant.as_deref().unwrap_or("(operator)"),
                    &key.name,
                    &key.prefix,
                    &key.scopes.join(","),
                    &status,
                ]);
            }
            table.print()?;
        }
        KeysCommand::Revoke { id } => {
            if api_keys::revoke(pool, id).await? {
                println!("revoked key {id}");
            } else {
                anyhow::bail!("no active key with id {id}");
            }
        }
    }
    Ok(())
}

/// Everything `api serve` needs.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "api",
    version,
    about = "Payment API: accepts card payments and queues them for the workers."
)]
pub struct Config {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub serve: ServeArgs,
    #[command(flatten)]
    pub log: common::telemetry::LogArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}
