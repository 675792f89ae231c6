//! Shared helpers for the Rust integration tests in tools/tests/: start the real `freshet`
//! binary on a free port with a fresh data dir, restart it on the same dir, stop it.
//!
//! Use from a test file with `mod common;` then:
//! ```ignore
//! let mut broker = common::Broker::start();          // waits for the `freshet ready` line
//! let bootstrap = broker.bootstrap();                  // "127.0.0.1:<port>"
//! broker.restart();                                    // same data dir and port
//! let b2 = common::Broker::start_with_args(&["--cores", "2"]);
//! ```
//! Dropping the `Broker` kills it. If the test is panicking, the tail of the broker's log is
//! printed and its log kept (path printed); `FRESHET_KEEP_DATA=1` keeps the data dir too. The broker process is owned by the test thread that started it (not shared).
#![allow(dead_code)]

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long to wait for the `freshet ready` line (`FRESHET_READY_TIMEOUT` seconds, default 30).
pub fn ready_timeout() -> Duration {
    let secs = std::env::var("FRESHET_READY_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// A fresh, unique directory under the system temp dir.
pub fn fresh_dir(prefix: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// One running `freshet start` process.
pub struct Broker {
    root: PathBuf,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    pub port: u16,
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl Broker {
    pub fn start() -> Broker {
        Self::start_with_args(&[])
    }

    pub fn start_with_args(extra_args: &[&str]) -> Broker {
        let root = fresh_dir("freshet-it");
        let data_dir = root.join("data");
        fs::create_dir_all(&data_dir).expect("create data dir");
        let mut b = Broker {
            log_path: root.join("broker.log"),
            root,
            data_dir,
            port: free_port(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        b.spawn();
        b
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let bin = env!("CARGO_BIN_EXE_freshet");
        let mut log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open broker log");
        writeln!(
            log,
            "\n===== start: {bin} start --data-dir {} --kafka-addr {}",
            self.data_dir.display(),
            self.bootstrap()
        )
        .expect("write log");
        let start_offset = log.metadata().expect("log metadata").len();
        let child = Command::new(bin)
            .arg("start")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--kafka-addr")
            .arg(self.bootstrap())
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log fd"))
            .stderr(log)
            .env("RUST_BACKTRACE", "1")
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + ready_timeout();
        loop {
            if read_from(&self.log_path, start_offset).contains("freshet ready") {
                break;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .expect("child")
                .try_wait()
                .expect("try_wait")
            {
                self.child = None;
                panic!(
                    "broker exited with {status} before ready:\n{}",
                    self.log_tail(60)
                );
            }
            if Instant::now() > deadline {
                self.kill();
                panic!(
                    "no `freshet ready` line within {:?}:\n{}",
                    ready_timeout(),
                    self.log_tail(60)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "broker said ready but does not accept connections"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on the pid of a child we own and have not reaped yet.
        unsafe {
            libc_kill(child.id() as i32, 15);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().expect("try_wait").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no clean shutdown.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the broker (SIGTERM) and starts it again on the same data dir and port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = read_from(&self.log_path, 0);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let died = match self.child.as_mut() {
            Some(c) => c.try_wait().ok().flatten(),
            None => None,
        };
        self.kill();
        let failed = std::thread::panicking() || died.is_some();
        if failed {
            eprintln!(
                "----- broker log tail ({}) -----\n{}",
                self.log_path.display(),
                self.log_tail(80)
            );
        }
        if std::env::var_os("FRESHET_KEEP_DATA").is_some() {
            eprintln!("broker data kept in {}", self.root.display());
        } else if failed {
            // Keep the log, not the (large, preallocated) data.
            let _ = fs::remove_dir_all(&self.data_dir);
            eprintln!("broker log kept in {}", self.log_path.display());
        } else {
            let _ = fs::remove_dir_all(&self.root);
        }
        if let Some(status) = died {
            if !std::thread::panicking() {
                panic!("broker died during the test ({status})");
            }
        }
    }
}

fn read_from(path: &Path, offset: u64) -> String {
    let mut s = String::new();
    if let Ok(mut f) = fs::File::open(path) {
        if f.seek(SeekFrom::Start(offset)).is_ok() {
            let mut buf = Vec::new();
            let _ = f.read_to_end(&mut buf);
            s = String::from_utf8_lossy(&buf).into_owned();
        }
    }
    s
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}
