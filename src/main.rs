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
mod index;
mod ops;
mod serve;
mod wiring;

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
    /// Run the job-store service of the distributed topology (HTTP+JSON over PostgreSQL, or over
    /// the SQLite file in data_dir when database_url is unset).
    Wobbly(RoleArgs),
    /// Write the demo images into a directory.
    DemoData {
        /// Directory to write them into.
        #[arg(long, default_value = "./skycut-data/demo")]
        dir: PathBuf,
    },
    /// Measure the service against its floor (cfitsio alone) on this machine, embedded and
    /// distributed (PostgreSQL + Redis, skipped when unreachable), and print one table.
    Bench(Box<bench::BenchArgs>),
    /// Index the images of every repository (directories and s3:// or gs:// prefixes) into the
    /// sky index (in the job-store database), reading only files that changed since the last run.
    Index {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Job store URL (postgres://… or sqlite://…); default from the configuration.
        #[arg(long)]
        database_url: Option<String>,
        /// An image repository, NAME=DIR or NAME=s3://BUCKET/PREFIX (repeatable).
        #[arg(long = "repository", value_name = "NAME=DIR")]
        repositories: Vec<String>,
    },
    /// Create or upgrade the job-store schema.
    Migrate {
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Job store URL (postgres://… or sqlite://…); default from the configuration.
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Check configuration files without running anything.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Load FILE (and the SKYCUT_* environment) as every role does, and say whether it is valid.
    Check {
        /// TOML configuration file.
        file: PathBuf,
    },
}

/// Which role a [`RoleArgs`] starts, since `--listen` names a different address for each.
#[derive(Clone, Copy)]
enum Role {
    Frontend,
    Worker,
    Wobbly,
}

/// Flags of the distributed roles; everything else comes from the configuration.
#[derive(clap::Args)]
pub struct RoleArgs {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on: the frontend's HTTP port (`listen`), wobbly's (`wobbly.listen`),
    /// or the worker's health and metrics port (`worker.health_listen`).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// An image repository, NAME=DIR (repeatable).
    #[arg(long = "repository", value_name = "NAME=DIR")]
    repositories: Vec<String>,
}

impl RoleArgs {
    fn config(&self, role: Role) -> anyhow::Result<Loaded> {
        let mut loaded = Config::load(self.config.as_deref())?;
        if let Some(listen) = self.listen {
            match role {
                Role::Frontend => loaded.config.listen = listen,
                Role::Worker => loaded.config.worker.health_listen = Some(listen),
                Role::Wobbly => loaded.config.wobbly.listen = listen,
            }
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
///
/// JSON lines carry the enclosing spans once, as the `spans` list (outermost first), each with
/// its fields; text lines are coloured only when stderr is a terminal, so a file gets no escapes.
fn init_logging(format: Option<LogFormat>, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let terminal = std::io::stderr().is_terminal();
    let format = format.unwrap_or(if terminal {
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
            .with_current_span(false)
            .with_span_list(true)
            .init(),
        LogFormat::Text => builder.with_ansi(terminal).init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The configuration decides how to log, so it is read first; what loading it had to warn
    // about is logged once logging is set up.
    let loaded = match &cli.command {
        Command::Serve(args) => Some(args.config()?),
        Command::Frontend(args) => Some(args.config(Role::Frontend)?),
        Command::Worker(args) => Some(args.config(Role::Worker)?),
        Command::Wobbly(args) => Some(args.config(Role::Wobbly)?),
        Command::Migrate { config, .. } => Some(Config::load(config.as_deref())?),
        Command::Config {
            command: ConfigCommand::Check { file },
        } => {
            let loaded = Config::load(Some(file.as_path()))?;
            for warning in &loaded.warnings {
                eprintln!("warning: {warning}");
            }
            println!("{} is a valid configuration", file.display());
            return Ok(());
        }
        Command::Index {
            config,
            repositories,
            ..
        } => {
            let mut loaded = Config::load(config.as_deref())?;
            add_repositories(&mut loaded.config, repositories)?;
            Some(loaded)
        }
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
        Command::Bench(args) => runtime.block_on(bench::run(*args)),
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
        Command::Index { database_url, .. } => {
            let config = config()?;
            let url = database_url.unwrap_or_else(|| config.database_url());
            runtime.block_on(async {
                tracing::info!(url = %wobbly::store::redact(&url), "connecting to the job store");
                let store = wobbly::SqlJobStore::connect(&url, &config.service_name, 4).await?;
                let index: std::sync::Arc<dyn uws::sky_index::ImageIndex> =
                    std::sync::Arc::new(store.sky_index());
                // Scratch space of its own: a source cache empties its directory when it
                // opens, and a `skycut serve` may be using data_dir's.
                let scratch = config
                    .data_dir
                    .join(format!("index-scratch-{}", std::process::id()));
                let buckets = buckets::build_source_cache(&config, &scratch)?;
                let report = index::scan(
                    &index,
                    &config.repositories,
                    buckets.as_deref(),
                    config.index.concurrency,
                )
                .await;
                std::fs::remove_dir_all(&scratch).ok();
                let report = report?;
                println!("{report}");
                anyhow::ensure!(
                    !report.incomplete(),
                    "part of the repositories could not be read (see the warnings above); \
                     the next run reads it"
                );
                anyhow::Ok(())
            })
        }
        Command::Migrate { database_url, .. } => {
            let config = config()?;
            let url = match database_url {
                Some(url) => url,
                None => {
                    // The default job store is a file in data_dir, which a fresh machine lacks.
                    if config.database_url.is_none() {
                        std::fs::create_dir_all(&config.data_dir).with_context(|| {
                            format!("cannot create data directory {}", config.data_dir.display())
                        })?;
                    }
                    config.database_url()
                }
            };
            runtime.block_on(async {
                // Each migration applied is logged by the store as it starts and ends.
                tracing::info!(url = %wobbly::store::redact(&url), "connecting to the job store");
                let store = wobbly::SqlJobStore::connect(&url, &config.service_name, 1).await?;
                match store.migrations_applied() {
                    0 => println!("job store was already up to date"),
                    1 => println!("job store migrated: 1 migration applied"),
                    n => println!("job store migrated: {n} migrations applied"),
                }
                anyhow::Ok(())
            })
        }
        Command::Config { .. } => Ok(()),
    }
}
