//! Real-process crash test: a writer process appends and flushes through glommio's DMA
//! files and prints each durable offset; we SIGKILL it mid-stream, reopen the directory on
//! the real disk and check that every offset it reported durable is there, intact
//! (CRC32C) and in order, three times over.
use freshet_storage::{DmaDisk, Log, LogConfig, SystemClock};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::rc::Rc;

fn run_writer_and_kill(dir: &PathBuf, lines_before_kill: usize) -> (i64, i64) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_freshet-storage-crash-writer"))
        .arg(dir)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn writer");
    let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
    let mut start = -1;
    let mut durable = -1;
    let mut line = String::new();
    let mut n = 0;
    while n < lines_before_kill {
        line.clear();
        if reader.read_line(&mut line).expect("read line") == 0 {
            panic!("writer exited early");
        }
        let mut it = line.split_whitespace();
        match (it.next(), it.next().and_then(|v| v.parse::<i64>().ok())) {
            (Some("start"), Some(v)) => start = v,
            (Some("durable"), Some(v)) => {
                assert!(v > durable, "durable offsets only grow");
                durable = v;
                n += 1;
            }
            _ => panic!("unexpected line {line:?}"),
        }
    }
    child.kill().expect("SIGKILL"); // std's kill() is SIGKILL on Unix
    child.wait().expect("reap");
    // Lines the writer printed before it died may still be in the pipe.
    for l in reader.lines() {
        let l = l.expect("line");
        if let Some(v) = l
            .strip_prefix("durable ")
            .and_then(|v| v.parse::<i64>().ok())
        {
            durable = durable.max(v);
        }
    }
    (start, durable)
}

fn verify(dir: PathBuf, durable: i64) -> i64 {
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let log = Log::open(DmaDisk, dir, LogConfig::default(), Rc::new(SystemClock))
                .await
                .expect("reopen");
            assert!(
                log.next_offset() >= durable,
                "log ends at {} but {durable} was reported durable",
                log.next_offset()
            );
            let mut off = 0;
            while off < log.next_offset() {
                let data = log.read(off, 1 << 20, i64::MAX).await.expect("read");
                let mut at = 0;
                while at < data.len() {
                    let h = freshet_storage::validate_batch(&data[at..]).expect("intact batch");
                    assert_eq!(h.base_offset, off, "batches are contiguous");
                    let k = off / 5;
                    assert_eq!(h.records_count, 5);
                    assert_eq!(h.base_timestamp, k, "batch {k} is the one written for it");
                    let last = data[at + h.size_bytes() - 2];
                    assert_eq!(last, (k % 251) as u8, "batch {k} carries its own payload");
                    off = h.last_offset() + 1;
                    at += h.size_bytes();
                }
            }
            let end = log.next_offset();
            log.close().await.expect("close");
            end
        })
        .expect("executor")
        .join()
        .expect("verify")
}

#[test]
fn kill9_writer_never_loses_reported_durable_offsets() {
    let dir = std::env::temp_dir().join(format!("freshet-kill9-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut prev_end = 0;
    for (round, lines) in [200usize, 57, 400].into_iter().enumerate() {
        let (start, durable) = run_writer_and_kill(&dir, lines);
        assert_eq!(
            start, prev_end,
            "round {round}: writer resumes where recovery ended"
        );
        let end = verify(dir.clone(), durable);
        assert!(end >= durable);
        prev_end = end;
    }
    let _ = std::fs::remove_dir_all(&dir);
}
