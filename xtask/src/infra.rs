//! Postgres, Redis and RabbitMQ as child processes of xtask, for `dev` and `test`.
//!
//! Nothing here uses systemd or the distribution's service scripts: each server runs from its
//! binary with a data directory and loopback ports of our own, so it neither depends on nor
//! disturbs system services that the packages may have started on the default ports.
//!
//! - Postgres refuses to run as root, so as root it runs as the `postgres` account (or a
//!   `trellis` system account created for the purpose) and owns its data directory.
//! - RabbitMQ runs from `/usr/lib/rabbitmq/bin/rabbitmq-server` (not the Debian wrapper that
//!   switches to the `rabbitmq` user) with a private node name, Erlang cookie, epmd and
//!   distribution port, all on loopback.
//! - Missing servers are installed with apt when we are root on Debian/Ubuntu; otherwise the
//!   exact command is printed.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustix::process::Signal;

use crate::proc::{self, Supervised};

/// The Postgres major version Trellis targets.
pub const PG_MAJOR: &str = "15";

/// How long each server may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// What the servers are for: `dev` keeps durable data, `test` trades durability for speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Durable data under `.trellis/`, reused across runs.
    Dev,
    /// Throwaway data, fsync off, removed on teardown.
    Test,
}

/// Loopback ports of the servers.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// Postgres.
    pub postgres: u16,
    /// Redis.
    pub redis: u16,
    /// RabbitMQ AMQP listener.
    pub amqp: u16,
    /// RabbitMQ's Erlang distribution listener.
    pub rabbitmq_dist: u16,
    /// The private epmd (Erlang port mapper) RabbitMQ registers with.
    pub epmd: u16,
}

impl Ports {
    /// The fixed dev ports, away from the system services' defaults.
    pub const DEV: Ports = Ports { postgres: 55432, redis: 56379, amqp: 55672, rabbitmq_dist: 55682, epmd: 55369 };

    /// Ports the kernel reports free right now (bound together on 127.0.0.1:0, then released).
    pub fn free() -> Result<Ports> {
        let listeners = (0..5).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<std::io::Result<Vec<_>>>()?;
        let ports = listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect::<std::io::Result<Vec<_>>>()?;
        Ok(Ports { postgres: ports[0], redis: ports[1], amqp: ports[2], rabbitmq_dist: ports[3], epmd: ports[4] })
    }

    /// Every port with its user.
    pub fn named(&self) -> Vec<(String, u16)> {
        vec![
            ("Postgres".into(), self.postgres),
            ("Redis".into(), self.redis),
            ("RabbitMQ".into(), self.amqp),
            ("RabbitMQ distribution".into(), self.rabbitmq_dist),
            ("epmd".into(), self.epmd),
        ]
    }
}

/// Fails with a list of the ports that something already listens on.
pub fn ensure_ports_free(ports: &[(String, u16)]) -> Result<()> {
    let busy: Vec<String> = ports
        .iter()
        .filter(|(_, port)| TcpListener::bind(("127.0.0.1", *port)).is_err())
        .map(|(name, port)| format!("{port} ({name})"))
        .collect();
    if !busy.is_empty() {
        bail!(
            "these ports are already in use on 127.0.0.1: {}.\nIs another `cargo xtask dev` running? Stop it (Ctrl-C) or \
             find the process with `ss -ltnp`.",
            busy.join(", ")
        );
    }
    Ok(())
}

/// Where the server binaries are.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// Directory of `postgres`, `initdb`, `pg_isready`, `psql`, `createdb`.
    pub pg_bin: PathBuf,
    /// Major version of that Postgres.
    pub pg_major: String,
    redis_server: PathBuf,
    rabbitmq_server: PathBuf,
    epmd: PathBuf,
}

impl Binaries {
    /// Finds the servers, installing missing ones with apt when we are root on Debian/Ubuntu.
    pub fn ensure() -> Result<Binaries> {
        let missing = match Binaries::locate() {
            Ok(bins) => return Ok(bins),
            Err(missing) => missing,
        };
        let install = format!("apt-get install -y --no-install-recommends {}", missing.join(" "));
        if !is_root() || which("apt-get").is_none() {
            bail!(
                "missing packages: {}.\nOn Debian/Ubuntu install them with:\n\n    sudo apt-get update && sudo {install}\n\n\
                 Elsewhere install Postgres {PG_MAJOR}, Redis and RabbitMQ with the system's package manager.",
                missing.join(", ")
            );
        }
        eprintln!("xtask: installing {} with apt-get", missing.join(", "));
        for args in [vec!["update"], install.split_whitespace().skip(1).collect::<Vec<_>>()] {
            let status = Command::new("apt-get")
                .args(&args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdin(Stdio::null())
                .status()
                .context("running apt-get")?;
            if !status.success() {
                bail!("`apt-get {}` failed ({status})", args.join(" "));
            }
        }
        Binaries::locate().map_err(|still| anyhow::anyhow!("still missing after apt-get: {}", still.join(", ")))
    }

    /// Finds the binaries, or names the Debian packages that provide the missing ones.
    fn locate() -> std::result::Result<Binaries, Vec<&'static str>> {
        let mut missing = Vec::new();
        let pg_bin = postgres_bin_dir();
        if pg_bin.is_none() {
            missing.push("postgresql");
        }
        let redis_server = which("redis-server");
        if redis_server.is_none() {
            missing.push("redis-server");
        }
        let rabbitmq_server = Some(PathBuf::from("/usr/lib/rabbitmq/bin/rabbitmq-server"))
            .filter(|p| is_executable(p))
            .or_else(|| which("rabbitmq-server"));
        let epmd = which("epmd").or_else(|| {
            let mut found: Vec<PathBuf> = fs::read_dir("/usr/lib/erlang")
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path().join("bin/epmd"))
                .filter(|p| is_executable(p))
                .collect();
            found.sort();
            found.pop()
        });
        if rabbitmq_server.is_none() || epmd.is_none() {
            missing.push("rabbitmq-server");
        }
        match (pg_bin, redis_server, rabbitmq_server, epmd) {
            (Some(pg_bin), Some(redis_server), Some(rabbitmq_server), Some(epmd)) if missing.is_empty() => {
                let pg_major = postgres_major(&pg_bin).unwrap_or_else(|| "unknown".into());
                if pg_major != PG_MAJOR {
                    eprintln!(
                        "xtask: warning: found Postgres {pg_major} in {}; Trellis targets Postgres {PG_MAJOR}",
                        pg_bin.display()
                    );
                }
                Ok(Binaries { pg_bin, pg_major, redis_server, rabbitmq_server, epmd })
            }
            _ => Err(missing),
        }
    }

    /// A Postgres client or server program.
    pub fn pg(&self, program: &str) -> PathBuf {
        self.pg_bin.join(program)
    }
}

/// `TRELLIS_PG_BIN`, else `/usr/lib/postgresql/15/bin`, else the newest other Debian version,
/// else the directory of `postgres` on the PATH.
fn postgres_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("TRELLIS_PG_BIN").map(PathBuf::from) {
        if is_executable(&dir.join("postgres")) {
            return Some(dir);
        }
        eprintln!("xtask: warning: TRELLIS_PG_BIN={} holds no postgres binary; ignoring it", dir.display());
    }
    let debian = PathBuf::from(format!("/usr/lib/postgresql/{PG_MAJOR}/bin"));
    if is_executable(&debian.join("postgres")) {
        return Some(debian);
    }
    let mut others: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| is_executable(&bin.join("postgres")))
        .collect();
    others.sort();
    if let Some((_, bin)) = others.pop() {
        return Some(bin);
    }
    which("postgres").and_then(|p| p.parent().map(Path::to_path_buf)).filter(|dir| is_executable(&dir.join("initdb")))
}

fn postgres_major(pg_bin: &Path) -> Option<String> {
    let out = Command::new(pg_bin.join("postgres")).arg("--version").output().ok()?;
    // "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().nth(2)?;
    Some(version.split('.').next()?.to_string())
}

/// Looks a program up on the PATH (plus the sbin directories, which a non-login root shell may lack).
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether xtask runs as root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The unprivileged account Postgres runs as when we are root.
#[derive(Debug, Clone)]
struct Account {
    name: String,
    uid: u32,
    gid: u32,
}

impl Account {
    /// `postgres` if it exists, else `trellis`, created as a system account when missing.
    fn for_postgres() -> Result<Account> {
        for name in ["postgres", "trellis"] {
            if let Some(account) = Account::lookup(name) {
                return Ok(account);
            }
        }
        eprintln!("xtask: creating system user `trellis` to run Postgres (it refuses to run as root)");
        let status = Command::new("useradd")
            .args(["--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent"])
            .args(["--shell", "/usr/sbin/nologin", "trellis"])
            .status()
            .context("running useradd")?;
        if !status.success() {
            bail!("`useradd --system trellis` failed ({status}); create an unprivileged user named trellis");
        }
        Account::lookup("trellis").context("user trellis not found after useradd")
    }

    fn lookup(name: &str) -> Option<Account> {
        let passwd = fs::read_to_string("/etc/passwd").ok()?;
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() < 4 || fields[0] != name {
                return None;
            }
            Some(Account { name: name.to_string(), uid: fields[2].parse().ok()?, gid: fields[3].parse().ok()? })
        })
    }

    fn apply(&self, cmd: &mut Command) {
        cmd.uid(self.uid).gid(self.gid);
    }

    /// Whether the account can write `dir` (and so search every parent).
    fn can_write(&self, dir: &Path) -> bool {
        let mut cmd = Command::new("test");
        cmd.arg("-w").arg(dir).current_dir("/").stdin(Stdio::null());
        self.apply(&mut cmd);
        cmd.status().is_ok_and(|s| s.success())
    }
}

/// A supervised server and how to tell that it is ready.
#[derive(Debug)]
struct Server {
    process: Supervised,
    probe: Probe,
    ready: bool,
}

impl Server {
    fn new(process: Supervised, probe: Probe) -> Server {
        Server { process, probe, ready: false }
    }
}

#[derive(Debug)]
enum Probe {
    Tcp(u16),
    Postgres { pg_isready: PathBuf, port: u16 },
    Redis(u16),
    Amqp(u16),
}

impl Probe {
    fn ready(&self) -> bool {
        match self {
            Probe::Tcp(port) => connect(*port).is_ok(),
            Probe::Postgres { pg_isready, port } => Command::new(pg_isready)
                .args(["-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-t", "2", "-p"])
                .arg(port.to_string())
                .stdin(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            Probe::Redis(port) => exchange(*port, b"PING\r\n").is_ok_and(|reply| reply.starts_with(b"+PONG")),
            // The AMQP 0-9-1 protocol header; a ready broker answers with a Connection.Start
            // method frame (frame type 1).
            Probe::Amqp(port) => exchange(*port, b"AMQP\x00\x00\x09\x01").is_ok_and(|reply| reply.first() == Some(&1)),
        }
    }
}

fn connect(port: u16) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    Ok(stream)
}

fn exchange(port: u16, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = connect(port)?;
    stream.write_all(request)?;
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf)?;
    Ok(buf[..n].to_vec())
}

/// The running servers. Dropping it stops them (and, for `test`, removes the data).
#[derive(Debug)]
pub struct Infra {
    profile: Profile,
    dir: PathBuf,
    /// The ports in use.
    pub ports: Ports,
    bins: Binaries,
    /// In start order: epmd, RabbitMQ, Redis, Postgres.
    procs: Vec<Server>,
    stopped: bool,
}

impl Infra {
    /// Starts the servers with data under `dir` without waiting for them; see [`Infra::wait_ready`].
    pub fn launch(bins: Binaries, profile: Profile, dir: &Path, ports: Ports) -> Result<Infra> {
        fs::create_dir_all(dir.join("logs")).with_context(|| format!("creating {}", dir.display()))?;
        let dir = dir.canonicalize()?;
        let mut infra = Infra { profile, dir, ports, bins, procs: Vec::new(), stopped: false };
        // From here on, an error drops `infra`, which stops what has started.
        infra.launch_rabbitmq()?;
        infra.launch_redis()?;
        infra.launch_postgres()?;
        Ok(infra)
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{name}.log"))
    }

    fn launch_rabbitmq(&mut self) -> Result<()> {
        let ports = self.ports;
        let base = self.dir.join("rabbitmq");
        let home = base.join("home");
        fs::create_dir_all(&home)?;
        let cookie = home.join(".erlang.cookie");
        if !cookie.exists() {
            let mut random = [0u8; 20];
            fs::File::open("/dev/urandom")?.read_exact(&mut random)?;
            let text: String = random.iter().map(|b| format!("{b:02X}")).collect();
            fs::write(&cookie, text)?;
        }
        fs::set_permissions(&cookie, fs::Permissions::from_mode(0o400))?;
        let level = if self.profile == Profile::Dev { "info" } else { "warning" };
        fs::write(
            base.join("rabbitmq.conf"),
            format!(
                "# Written by cargo xtask.\nlisteners.tcp.default = 127.0.0.1:{}\nloopback_users.guest = true\n\
                 disk_free_limit.absolute = 50MB\nlog.console = false\nlog.file.level = {level}\n",
                ports.amqp
            ),
        )?;
        fs::write(base.join("enabled_plugins"), "[].\n")?;
        fs::write(base.join("rabbitmq-env.conf"), "")?;

        // Our own epmd, in the foreground, so that it stops with us and never meets the system's.
        let mut epmd = Command::new(&self.bins.epmd);
        epmd.args(["-address", "127.0.0.1", "-port"]).arg(ports.epmd.to_string());
        let epmd = Supervised::spawn("epmd", &mut epmd, Some(&self.log("epmd")), Signal::TERM, Duration::from_secs(5))?;
        self.procs.push(Server::new(epmd, Probe::Tcp(ports.epmd)));
        let deadline = Instant::now() + Duration::from_secs(10);
        while connect(ports.epmd).is_err() {
            if Instant::now() > deadline || self.procs[0].process.exited().is_some() {
                bail!("epmd did not start on port {}{}", ports.epmd, proc::log_tails(&[self.log("epmd")], 20));
            }
            std::thread::sleep(Duration::from_millis(50));
        }

        let node = format!("trellis-{}@localhost", ports.amqp);
        let mut cmd = Command::new(&self.bins.rabbitmq_server);
        cmd.current_dir(&base)
            .env("HOME", &home)
            .env("RABBITMQ_NODENAME", &node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", ports.amqp.to_string())
            .env("RABBITMQ_DIST_PORT", ports.rabbitmq_dist.to_string())
            .env("ERL_EPMD_PORT", ports.epmd.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_MNESIA_BASE", base.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", base.join("log"))
            .env("RABBITMQ_CONFIG_FILE", base.join("rabbitmq.conf"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", base.join("advanced.config"))
            .env("RABBITMQ_CONF_ENV_FILE", base.join("rabbitmq-env.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", base.join("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", base.join("rabbitmq.pid"))
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-start_epmd false -kernel inet_dist_use_interface {127,0,0,1}",
            );
        // The wrapper script turns SIGTERM into a graceful broker shutdown.
        let mut rabbit = Supervised::spawn(
            "RabbitMQ",
            &mut cmd,
            Some(&self.log("rabbitmq")),
            Signal::TERM,
            Duration::from_secs(30),
        )?;
        rabbit.logs.push(base.join("log").join(format!("{node}.log")));
        self.procs.push(Server::new(rabbit, Probe::Amqp(ports.amqp)));
        Ok(())
    }

    fn launch_redis(&mut self) -> Result<()> {
        let data = self.dir.join("redis");
        fs::create_dir_all(&data)?;
        let mut cmd = Command::new(&self.bins.redis_server);
        cmd.current_dir(&data)
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.ports.redis.to_string())
            .arg("--dir")
            .arg(&data)
            .args(["--daemonize", "no", "--appendonly", "no"]);
        match self.profile {
            Profile::Dev => cmd.args(["--save", "60", "1"]),
            Profile::Test => cmd.args(["--save", ""]),
        };
        // SIGTERM: Redis saves (when saving is configured) and exits.
        let redis =
            Supervised::spawn("Redis", &mut cmd, Some(&self.log("redis")), Signal::TERM, Duration::from_secs(15))?;
        self.procs.push(Server::new(redis, Probe::Redis(self.ports.redis)));
        Ok(())
    }

    fn launch_postgres(&mut self) -> Result<()> {
        let data = self.dir.join("postgres");
        let account = if is_root() { Some(Account::for_postgres()?) } else { None };
        let as_account = |cmd: &mut Command| {
            cmd.current_dir("/").env("LC_ALL", "C").stdin(Stdio::null());
            if let Some(account) = &account {
                account.apply(cmd);
            }
        };

        let initialized = data.join("PG_VERSION").exists();
        if initialized {
            let version = fs::read_to_string(data.join("PG_VERSION"))?.trim().to_string();
            if version != self.bins.pg_major {
                bail!(
                    "{} holds a Postgres {version} cluster but the binaries are Postgres {}; delete that directory \
                     to start over",
                    data.display(),
                    self.bins.pg_major
                );
            }
        } else if data.exists() {
            // An initdb that never finished: nothing worth keeping.
            fs::remove_dir_all(&data)?;
        }
        fs::create_dir_all(&data)?;
        fs::set_permissions(&data, fs::Permissions::from_mode(0o700))?;
        if let Some(account) = &account {
            let meta = fs::metadata(&data)?;
            if std::os::unix::fs::MetadataExt::uid(&meta) != account.uid {
                chown_recursive(&data, account.uid, account.gid)?;
            }
            if !account.can_write(&data) {
                bail!(
                    "Postgres runs as user `{}`, which cannot reach {} (a parent directory is not searchable by it).\n\
                     Set TRELLIS_DEV_DIR to a directory it can reach (for example /var/tmp/trellis-dev), or make the \
                     parents searchable with `chmod o+x`.",
                    account.name,
                    data.display()
                );
            }
        }

        if !initialized {
            let log = self.log("initdb");
            let out = fs::File::create(&log)?;
            let mut initdb = Command::new(self.bins.pg("initdb"));
            initdb
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-instructions"])
                .stdout(out.try_clone()?)
                .stderr(out);
            if self.profile == Profile::Test {
                initdb.arg("--no-sync");
            }
            as_account(&mut initdb);
            let status = initdb.status().context("running initdb")?;
            if !status.success() {
                bail!("initdb failed ({status}){}", proc::log_tails(&[log], 30));
            }
        }

        let mut cmd = Command::new(self.bins.pg("postgres"));
        cmd.arg("-D").arg(&data);
        let mut settings = vec![
            "listen_addresses=127.0.0.1".to_string(),
            format!("port={}", self.ports.postgres),
            "unix_socket_directories=".to_string(),
            // Many tests run at once, each with pools of its own.
            "max_connections=300".to_string(),
        ];
        if self.profile == Profile::Test {
            settings.extend(["fsync=off", "synchronous_commit=off", "full_page_writes=off"].map(String::from));
        }
        for setting in settings {
            cmd.arg("-c").arg(setting);
        }
        as_account(&mut cmd);
        // SIGINT is Postgres' "fast" shutdown (what `pg_ctl stop -m fast` sends).
        let postgres =
            Supervised::spawn("Postgres", &mut cmd, Some(&self.log("postgres")), Signal::INT, Duration::from_secs(30))?;
        let probe = Probe::Postgres { pg_isready: self.bins.pg("pg_isready"), port: self.ports.postgres };
        self.procs.push(Server::new(postgres, probe));
        Ok(())
    }

    /// Waits until every server answers its protocol. On failure, prints what went wrong with
    /// the server's log, stops everything, and fails.
    pub fn wait_ready(&mut self) -> Result<()> {
        let result = self.poll_ready();
        if let Err(e) = &result {
            if !proc::stop_requested() {
                eprintln!("xtask: {e:#}");
            }
            self.stop();
        }
        result.map_err(|e| if proc::stop_requested() { e } else { anyhow::anyhow!("the servers did not start") })
    }

    fn poll_ready(&mut self) -> Result<()> {
        let start = Instant::now();
        while !self.procs.iter().all(|s| s.ready) {
            for server in self.procs.iter_mut().filter(|s| !s.ready) {
                let process = &mut server.process;
                if let Some(status) = process.exited() {
                    bail!("{} exited during start-up ({status}){}", process.name, proc::log_tails(&process.logs, 40));
                }
                if server.probe.ready() {
                    server.ready = true;
                    if process.name != "epmd" {
                        eprintln!("xtask: {} ready ({:.1} s)", process.name, start.elapsed().as_secs_f32());
                    }
                } else if start.elapsed() > READY_TIMEOUT {
                    bail!(
                        "{} did not become ready within {} s{}",
                        process.name,
                        READY_TIMEOUT.as_secs(),
                        proc::log_tails(&process.logs, 40)
                    );
                }
            }
            if proc::stop_requested() {
                bail!("interrupted");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// A superuser URL of `database`.
    pub fn postgres_url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.ports.postgres)
    }

    /// The Redis URL.
    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.ports.redis)
    }

    /// The AMQP URL (user guest, allowed from loopback only).
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.ports.amqp)
    }

    /// Where the data and logs live.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs one SQL statement with psql as the owner and returns its unaligned output.
    pub fn query(&self, database: &str, sql: &str) -> Result<String> {
        let port = self.ports.postgres.to_string();
        let out = Command::new(self.bins.pg("psql"))
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-d", database, "-tAX", "-v", "ON_ERROR_STOP=1"])
            .arg("-c")
            .arg(sql)
            .stdin(Stdio::null())
            .output()
            .context("running psql")?;
        if !out.status.success() {
            bail!("psql failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Creates `database` if it does not exist.
    pub fn ensure_database(&self, database: &str) -> Result<()> {
        let port = self.ports.postgres.to_string();
        let out = Command::new(self.bins.pg("psql"))
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-d", "postgres", "-tAX", "-v", "ON_ERROR_STOP=1"])
            .arg("-c")
            .arg(format!("select 1 from pg_database where datname = '{database}'"))
            .stdin(Stdio::null())
            .output()
            .context("running psql")?;
        if !out.status.success() {
            bail!("psql failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        if String::from_utf8_lossy(&out.stdout).trim() == "1" {
            return Ok(());
        }
        let status = Command::new(self.bins.pg("createdb"))
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", database])
            .stdin(Stdio::null())
            .status()
            .context("running createdb")?;
        if !status.success() {
            bail!("createdb {database} failed ({status})");
        }
        eprintln!("xtask: created database {database}");
        Ok(())
    }

    /// The name and log tails of a server that has exited, if any.
    pub fn failed(&mut self) -> Option<String> {
        self.procs.iter_mut().find_map(|server| {
            let process = &mut server.process;
            let status = process.exited()?;
            Some(format!("{} exited ({status}){}", process.name, proc::log_tails(&process.logs, 40)))
        })
    }

    /// Stops every server (RabbitMQ, Redis and Postgres together, then epmd). Idempotent.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if !self.procs.is_empty() {
            eprintln!("xtask: stopping RabbitMQ, Redis and Postgres");
        }
        let since = Instant::now();
        let first_server = self.procs.len().min(1);
        let (epmd, servers) = self.procs.split_at_mut(first_server);
        for server in servers.iter_mut() {
            server.process.request_stop();
        }
        for server in servers.iter_mut().rev() {
            // A server still booting has nothing to save; do not wait out its boot.
            let grace = if server.ready { None } else { Some(Duration::from_secs(3)) };
            server.process.finish_stop(since, grace);
        }
        for server in epmd.iter_mut() {
            server.process.stop();
        }
        if self.profile == Profile::Test {
            if let Err(e) = fs::remove_dir_all(&self.dir) {
                eprintln!("xtask: could not remove {}: {e}", self.dir.display());
            }
        } else {
            eprintln!("xtask: stopped; data kept in {}", self.dir.display());
        }
    }
}

impl Drop for Infra {
    fn drop(&mut self) {
        self.stop();
    }
}

fn chown_recursive(path: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).with_context(|| format!("chown {}", path.display()))?;
    if fs::symlink_metadata(path)?.is_dir() {
        for entry in fs::read_dir(path)? {
            chown_recursive(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}
