//! A real Kafka-protocol broker for the Kafka tests: `noida-db` 0.2.3
//! (installed by `.ci/setup`), started on a free loopback port with its own
//! data directory, and killed when the handle drops.
//!
//! The binary is `$NOIDA_DB_BIN` if set, else the one inside the `noida_db`
//! Python package (the wheel ships a prebuilt binary; its `noida-db` script
//! is a Python wrapper that would outlive a kill), else `noida-db` on the
//! `PATH` (a `cargo install`ed binary).

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running broker.
pub struct Broker {
    child: Child,
    port: u16,
    _data: tempfile::TempDir,
}

fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("NOIDA_DB_BIN") {
        return PathBuf::from(p);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import noida_db, os; print(os.path.join(os.path.dirname(noida_db.__file__), 'noida-db'))",
        ])
        .output();
    if let Ok(out) = out {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && p.is_file() {
            return p;
        }
    }
    PathBuf::from("noida-db")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Broker {
    /// Starts a broker and waits until it accepts connections.
    pub fn start() -> Broker {
        let bin = binary();
        for _attempt in 0..3 {
            let port = free_port();
            let data = tempfile::tempdir().unwrap();
            let mut child = Command::new(&bin)
                .arg("start")
                .arg("--data-dir")
                .arg(data.path())
                .args(["--host", "127.0.0.1", "--only", "kafka", "--kafka-port"])
                .arg(port.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start the Kafka broker {} ({e}): run .ci/setup \
                         (pip install noida-db==0.2.3) or set NOIDA_DB_BIN",
                        bin.display()
                    )
                });
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // the port was taken meanwhile: try another
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Broker {
                        child,
                        port,
                        _data: data,
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("the Kafka broker {} did not start", bin.display());
    }

    /// `host:port` for clients.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
