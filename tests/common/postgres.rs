//! A private PostgreSQL server for the fault tests that stop the database: its own cluster
//! (initdb) on a free port, so stopping it cannot disturb other tests or the machine's server.
//! PostgreSQL refuses to run as root, so as root it runs as the `postgres` user.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

pub struct PrivatePostgres {
    pub url: String,
    data: PathBuf,
    port: u16,
    bin: PathBuf,
}

/// The server binaries of the installed PostgreSQL (Debian keeps them off the PATH).
fn bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| d.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
        .expect("an initdb under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

impl PrivatePostgres {
    pub fn start() -> PrivatePostgres {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        // Not a TempDir: that would be private to root, and the server runs as `postgres`.
        let data = std::env::temp_dir().join(format!("skycut-pg-{port}-{}", std::process::id()));
        let pg = PrivatePostgres {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            data,
            port,
            bin: bin_dir(),
        };
        let initdb = pg.bin.join("initdb");
        let data = pg.data.display().to_string();
        pg.run(&[
            initdb.to_str().expect("path"),
            "-D",
            &data,
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ]);
        pg.resume();
        pg
    }

    /// Runs a server command, as `postgres` when the test runs as root.
    fn run(&self, args: &[&str]) {
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).args(args);
            c
        } else {
            let mut c = Command::new(args[0]);
            c.args(&args[1..]);
            c
        };
        let out = command.output().expect("run a PostgreSQL command");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn pg_ctl(&self, args: &[&str]) {
        let pg_ctl = self.bin.join("pg_ctl");
        let data = self.data.display().to_string();
        let mut all = vec![pg_ctl.to_str().expect("path"), "-D", &data, "-w"];
        all.extend_from_slice(args);
        self.run(&all);
    }

    /// Stops the server at once, dropping every connection (a crash or failover as clients see it).
    pub fn stop(&self) {
        self.pg_ctl(&["-m", "immediate", "stop"]);
    }

    /// Starts the server again on the same port and data.
    pub fn resume(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.data.display()
        );
        self.pg_ctl(&["-o", &options, "-l", "/dev/null", "start"]);
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let data = self.data.display().to_string();
        let stop = [
            pg_ctl.to_str().unwrap_or("pg_ctl"),
            "-D",
            &data,
            "-m",
            "immediate",
            "stop",
        ];
        let _ = if is_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .args(stop)
                .output()
        } else {
            Command::new(stop[0]).args(&stop[1..]).output()
        };
        let _ = std::fs::remove_dir_all(&self.data);
    }
}
