//! Helpers for the CLI integration tests: run the `freshet` binary as a user would and
//! capture its exit code, stdout and stderr; read figures out of a bench JSON report.
#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one CLI invocation produced.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Panics with the whole output unless the command succeeded.
    pub fn ok(self) -> Out {
        assert_eq!(self.code, 0, "command failed: {self:#?}");
        self
    }
}

/// Runs `freshet ARGS` with `stdin` fed in; kills it after `timeout`.
pub fn freshet_with(args: &[&str], stdin: &str, timeout: Duration) -> Out {
    let mut child = Command::new(env!("CARGO_BIN_EXE_freshet"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn freshet");
    {
        let mut si = child.stdin.take().expect("stdin piped");
        let data = stdin.to_string();
        std::thread::spawn(move || {
            let _ = si.write_all(data.as_bytes());
        });
    }
    let pid = child.id();
    let done = Arc::new(AtomicBool::new(false));
    let killer = {
        let done = done.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            while !done.load(Ordering::SeqCst) {
                if start.elapsed() >= timeout {
                    // The test owns this child; SIGKILL it by its own pid only.
                    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let out = child.wait_with_output().expect("wait for freshet");
    done.store(true, Ordering::SeqCst);
    let _ = killer.join();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `freshet ARGS` with empty stdin and a 60 s limit.
pub fn freshet(args: &[&str]) -> Out {
    freshet_with(args, "", Duration::from_secs(60))
}

/// Asserts a failed command explains itself in one line without a panic or backtrace.
pub fn assert_one_line_error(o: &Out, needle: &str) {
    assert_ne!(o.code, 0, "expected failure: {o:#?}");
    let lines: Vec<&str> = o.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line: {o:#?}");
    assert!(lines[0].starts_with("error: "), "{o:#?}");
    assert!(lines[0].contains(needle), "missing {needle:?}: {o:#?}");
    assert!(!o.stderr.contains("panicked"), "{o:#?}");
}

/// The number after `"key":` in a flat or nested JSON text (first occurrence).
pub fn json_number(json: &str, key: &str) -> Option<f64> {
    let pat = format!("\"{key}\":");
    let i = json.find(&pat)? + pat.len();
    let rest = &json[i..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == 'e' || c == '+'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The JSON object text after `"key":` (balanced braces), or None for null/missing.
pub fn json_object<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\":");
    let i = json.find(&pat)? + pat.len();
    let rest = &json[i..];
    if !rest.starts_with('{') {
        return None;
    }
    let mut depth = 0;
    for (j, c) in rest.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&rest[..=j]);
                }
            }
            _ => {}
        }
    }
    None
}
