//! The `api` binary's subcommands: `serve` (default), `migrate`, `keys`,
//! `openapi`.
//!
//! Keys are of two kinds (see [`crate::auth`]): `keys create` makes a
//! merchant's key with merchant scopes, and refuses `admin`; `keys
//! create-operator` makes an operator's key, bound to no merchant, for the
//! dead-letter endpoints.

use anyhow::Context as _;
use clap::Parser as _;
use common::db::api_keys;
use common::domain::{DomainError, Scope};

use crate::auth::{generate_secret, hash_secret};
use crate::Config;

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
    common::telemetry::init(config.log.log_format);
    run(config).await
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    match config.command.clone().unwrap_or(Command::Serve) {
        Command::Serve => {
            let listener = tokio::net::TcpListener::bind(&config.serve.bind)
                .await
                .with_context(|| format!("binding API_BIND {}", config.serve.bind))?;
            let (pool, broker) = crate::connect(&config).await?;
            crate::serve(
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

/// A key or merchant name: 1 to 255 characters, no control characters (they
/// would reach `keys list`, logs and terminals).
fn parse_name(value: &str) -> Result<String, String> {
    let len = value.chars().count();
    if !(1..=255).contains(&len) {
        return Err("a name is 1 to 255 characters".into());
    }
    if value.chars().any(char::is_control) {
        return Err("a name may not contain control characters".into());
    }
    Ok(value.to_owned())
}

/// A merchant scope for clap; `admin` gets an error naming the operator
/// command.
fn parse_scope(value: &str) -> Result<Scope, String> {
    value.trim().parse().map_err(|e: DomainError| e.0)
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
            println!(
                "{:<36}  {:<16}  {:<16}  {:<10}  {:<32}  status",
                "id", "merchant", "name", "prefix", "scopes"
            );
            for key in api_keys::list(pool).await? {
                let status = match key.revoked_at {
                    Some(at) => format!("revoked {}", at.to_rfc3339()),
                    None => "active".into(),
                };
                println!(
                    "{:<36}  {:<16}  {:<16}  {:<10}  {:<32}  {status}",
                    key.id,
                    key.merchant.as_deref().unwrap_or("(operator)"),
                    key.name,
                    key.prefix,
                    key.scopes.join(",")
                );
            }
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

/// Creates a key for the named merchant; returns its id and secret.
/// Only merchant scopes are accepted: asking for `admin` is an error that
/// points to [`create_operator_key`].
pub async fn create_key(
    pool: &sqlx::PgPool,
    merchant: &str,
    name: &str,
    scopes: &[String],
) -> anyhow::Result<(uuid::Uuid, String)> {
    let scopes = scopes
        .iter()
        .map(|s| parse_scope(s).map(|s| s.as_str().to_owned()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("--scopes: {e}"))?;
    parse_name(merchant).map_err(|e| anyhow::anyhow!("--merchant: {e}"))?;
    parse_name(name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
    let merchant_id = api_keys::ensure_merchant(pool, merchant).await?;
    let secret = generate_secret();
    let id = api_keys::insert(
        pool,
        merchant_id,
        name,
        &secret_prefix(&secret),
        &hash_secret(&secret),
        &scopes,
    )
    .await?;
    Ok((id, secret))
}

/// Creates an operator key (no merchant); returns its id and secret.
pub async fn create_operator_key(
    pool: &sqlx::PgPool,
    name: &str,
) -> anyhow::Result<(uuid::Uuid, String)> {
    parse_name(name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
    let secret = generate_secret();
    let id = api_keys::insert_operator(pool, name, &secret_prefix(&secret), &hash_secret(&secret))
        .await?;
    Ok((id, secret))
}

/// The first characters of a secret, kept so operators can tell keys apart.
fn secret_prefix(secret: &str) -> String {
    secret.chars().take(8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded_and_free_of_control_characters() {
        assert!(parse_name("acme").is_ok());
        assert!(parse_name("").is_err());
        assert!(parse_name(&"n".repeat(256)).is_err());
        assert!(parse_name("ac\u{1b}[2Jme").is_err());
        assert!(parse_name("line\nbreak").is_err());
    }
}
