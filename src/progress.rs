//! Progress of long commands: a bar on a terminal; without one (nohup, a service
//! manager, `docker logs`), a log line every few seconds with done/total, rate and ETA.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Seconds between log lines when there is no terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Progress {
    bar: ProgressBar,
    inner: Arc<Inner>,
}

struct Inner {
    what: String,
    unit: &'static str,
    started: Instant,
    last_line: Mutex<Instant>,
}

impl Progress {
    /// `total` items of `unit` (e.g. "prompts"), labelled `what`.
    pub fn new(total: u64, what: impl Into<String>, unit: &'static str) -> Self {
        let what = what.into();
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{{prefix:>9}} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} {unit} ({{eta}}) {{msg}}"
            ))
            .expect("a valid template"),
        );
        bar.set_prefix(what.clone());
        let now = Instant::now();
        Self { bar, inner: Arc::new(Inner { what, unit, started: now, last_line: Mutex::new(now) }) }
    }

    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
        self.log(false);
    }

    pub fn set_position(&self, pos: u64) {
        self.bar.set_position(pos);
        self.log(false);
    }

    pub fn set_message(&self, msg: impl Into<String>) {
        self.bar.set_message(msg.into());
    }

    pub fn finish(&self) {
        self.log(true);
        self.bar.finish_and_clear();
    }

    fn log(&self, last: bool) {
        if !self.bar.is_hidden() {
            return;
        }
        let now = Instant::now();
        {
            let mut at = self.inner.last_line.lock().expect("not poisoned");
            if !last && now.duration_since(*at) < LOG_EVERY {
                return;
            }
            *at = now;
        }
        let (done, total) = (self.bar.position(), self.bar.length().unwrap_or(0));
        tracing::info!(
            done,
            total,
            "{}",
            line(&self.inner.what, self.inner.unit, done, total, now.duration_since(self.inner.started), &self.bar.message())
        );
    }
}

/// `iter 1: 12/64 prompts (0.21/s, ETA 4m 8s) 9 pairs`
pub fn line(what: &str, unit: &str, done: u64, total: u64, elapsed: Duration, msg: &str) -> String {
    let rate = done as f64 / elapsed.as_secs_f64().max(1e-9);
    let eta = if done == 0 || done >= total {
        "-".to_string()
    } else {
        let secs = ((total - done) as f64 / rate).round() as u64;
        if secs >= 60 {
            format!("{}m {}s", secs / 60, secs % 60)
        } else {
            format!("{secs}s")
        }
    };
    let msg = if msg.is_empty() { String::new() } else { format!(" {msg}") };
    format!("{what}: {done}/{total} {unit} ({rate:.2}/s, ETA {eta}){msg}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_says_done_total_rate_and_eta() {
        assert_eq!(
            line("iter 1", "prompts", 12, 64, Duration::from_secs(60), "9 pairs"),
            "iter 1: 12/64 prompts (0.20/s, ETA 4m 20s) 9 pairs"
        );
        assert_eq!(line("ifeval", "prompts", 0, 10, Duration::from_secs(3), ""), "ifeval: 0/10 prompts (0.00/s, ETA -)");
        assert_eq!(line("ifeval", "prompts", 10, 10, Duration::from_secs(5), ""), "ifeval: 10/10 prompts (2.00/s, ETA -)");
    }
}
