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
mod ops;
mod serve;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Config;

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
    fn config(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        add_repositories(&mut config, &self.repositories)?;
        Ok(config)
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
    fn config(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        add_repositories(&mut config, &self.repositories)?;
        Ok(config)
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The bench runs a whole service in its own process; a log line per request would be
    // measured along with it.
    let default_filter = match cli.command {
        Command::Bench(_) => "warn,sqlx=error",
        _ => "info,sqlx=warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(args) => {
            let config = args.config()?;
            runtime.block_on(serve::run(config, args.demo))
        }
        Command::Frontend(args) => runtime.block_on(distributed::frontend(args.config()?)),
        Command::Wobbly(args) => runtime.block_on(distributed::wobbly(args.config()?)),
        Command::Worker(args) => runtime.block_on(distributed::worker(args.config()?)),
        Command::Bench(args) => runtime.block_on(bench::run(args)),
        Command::DemoData { dir } => {
            std::fs::create_dir_all(&dir)?;
            let images = soda::write_demo_repository(&dir)?;
            for image in images {
                println!("{}/{}.fits", dir.display(), image.name);
            }
            Ok(())
        }
        Command::Migrate {
            config,
            database_url,
        } => {
            let config = Config::load(config.as_deref())?;
            let url = database_url.unwrap_or_else(|| config.database_url());
            runtime.block_on(async {
                wobbly::SqlJobStore::connect(&url, &config.service_name, 1).await?;
                println!("job store is up to date");
                anyhow::Ok(())
            })
        }
    }
}
