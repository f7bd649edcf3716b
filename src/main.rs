//! The `skycut` binary: reads the configuration, opens the connections, and runs a role.
//!
//! `serve` runs everything in one process with embedded defaults (SQLite, an in-process queue, a
//! local result directory); `demo-data` writes the demo images; `migrate` prepares a job store;
//! `bench` measures the service against its floor (cfitsio alone), embedded and distributed.

mod auth;
mod bench;
mod buckets;
mod config;
mod distributed;
mod http;
mod ops;
mod serve;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use std::io::IsTerminal;

use anyhow::Context;

use crate::config::{Config, Loaded, LogFormat};

#[derive(Parser)]
#[command(name = "skycut", version, about = "IVOA SODA image-cutout service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole service in one process (frontend, worker, job store).
    Serve(ServeArgs),
    /// Run the public HTTP service of the distributed topology (PostgreSQL + Redis).
    Frontend(RoleArgs),
    /// Run a cutout worker of the distributed topology (PostgreSQL + Redis).
    Worker(RoleArgs),
    /// Run the job-store service of the distributed topology (HTTP+JSON over PostgreSQL).
    Wobbly(RoleArgs),
    /// Write the demo images into a directory.
    DemoData {
        /// Directory to write them into.
        #[arg(long, default_value = "./skycut-data/demo")]
        dir: PathBuf,
    },
    /// Measure the service against its floor (cfitsio alone) on this machine, embedded and
    /// distributed (PostgreSQL + Redis, skipped when unreachable), and print one table.
    Bench(bench::BenchArgs),
    /// Create or upgrade the job-store schema.
    Migrate {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Job store URL (postgres://… or sqlite://…); default from the configuration.
        #[arg(long)]
        database_url: Option<String>,
    },
}

/// Flags of the distributed roles; everything else comes from the configuration.
#[derive(clap::Args)]
pub struct RoleArgs {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on (frontend).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// An image repository, NAME=DIR (repeatable).
    #[arg(long = "repository", value_name = "NAME=DIR")]
    repositories: Vec<String>,
}

impl RoleArgs {
    fn config(&self) -> anyhow::Result<Loaded> {
        let mut loaded = Config::load(self.config.as_deref())?;
        if let Some(listen) = self.listen {
            loaded.config.listen = listen;
        }
        add_repositories(&mut loaded.config, &self.repositories)?;
        Ok(loaded)
    }
}

fn add_repositories(config: &mut Config, specs: &[String]) -> anyhow::Result<()> {
    for spec in specs {
        let (name, dir) = spec
            .split_once('=')
            .filter(|(n, d)| !n.is_empty() && !d.is_empty())
            .ok_or_else(|| anyhow::anyhow!("--repository takes NAME=DIR, got {spec:?}"))?;
        config
            .repositories
            .insert(name.to_owned(), PathBuf::from(dir));
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Directory for the SQLite job store, result bucket and signing key.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// An image repository, NAME=DIR (repeatable): `butler://NAME/X` is `DIR/X.fits`.
    #[arg(long = "repository", value_name = "NAME=DIR")]
    repositories: Vec<String>,
    /// TOML configuration file holding the same settings.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Write demo images into a `demo` repository (if absent) and print a ready-to-paste curl line.
    #[arg(long)]
    demo: bool,
}

impl ServeArgs {
    /// The configuration with this command line's flags applied last.
    fn config(&self) -> anyhow::Result<Loaded> {
        let mut loaded = Config::load(self.config.as_deref())?;
        if let Some(listen) = self.listen {
            loaded.config.listen = listen;
        }
        if let Some(dir) = &self.data_dir {
            loaded.config.data_dir = dir.clone();
        }
        add_repositories(&mut loaded.config, &self.repositories)?;
        Ok(loaded)
    }
}

/// Sets up logging to stderr in the configured format (JSON unless stderr is a terminal).
fn init_logging(format: Option<LogFormat>, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let format = format.unwrap_or(if std::io::stderr().is_terminal() {
        LogFormat::Text
    } else {
        LogFormat::Json
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The configuration decides how to log, so it is read first; what loading it had to warn
    // about is logged once logging is set up.
    let loaded = match &cli.command {
        Command::Serve(args) => Some(args.config()?),
        Command::Frontend(args) | Command::Worker(args) | Command::Wobbly(args) => {
            Some(args.config()?)
        }
        Command::Migrate { config, .. } => Some(Config::load(config.as_deref())?),
        Command::Bench(_) | Command::DemoData { .. } => None,
    };
    let (config, warnings) = match loaded {
        Some(Loaded { config, warnings }) => (Some(config), warnings),
        None => (None, Vec::new()),
    };
    // The bench runs a whole service in its own process; a log line per request would be
    // measured along with it.
    let default_filter = match cli.command {
        Command::Bench(_) => "warn,sqlx=error",
        _ => "info,sqlx=warn",
    };
    init_logging(config.as_ref().and_then(|c| c.log_format), default_filter);
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // Every command that uses a configuration loaded one above.
    let config = || config.context("no configuration loaded");
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve::run(config()?, args.demo)),
        Command::Frontend(_) => runtime.block_on(distributed::frontend(config()?)),
        Command::Wobbly(_) => runtime.block_on(distributed::wobbly(config()?)),
        Command::Worker(_) => runtime.block_on(distributed::worker(config()?)),
        Command::Bench(args) => runtime.block_on(bench::run(args)),
        Command::DemoData { dir } => {
            std::fs::create_dir_all(&dir)?;
            // Progress on stderr, in the log format; stdout keeps only the paths.
            let images = soda::write_demo_repository_reporting(&dir, &mut |p| {
                tracing::info!(
                    image = %p.image.name,
                    path = %p.path.display(),
                    progress = %format!("{}/{}", p.done, p.total),
                    "{}",
                    if p.written { "demo image written" } else { "demo image already there" }
                );
            })?;
            for image in images {
                println!("{}/{}.fits", dir.display(), image.name);
            }
            Ok(())
        }
        Command::Migrate { database_url, .. } => {
            let config = config()?;
            let url = database_url.unwrap_or_else(|| config.database_url());
            runtime.block_on(async {
                // Each migration applied is logged by the store as it starts and ends.
                tracing::info!(url = %wobbly::store::redact(&url), "connecting to the job store");
                wobbly::SqlJobStore::connect(&url, &config.service_name, 1).await?;
                println!("job store is up to date");
                anyhow::Ok(())
            })
        }
    }
}
