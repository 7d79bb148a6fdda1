//! What the workers count: latencies of successful logins and failures by kind.

use std::collections::BTreeMap;

use sasl2_fast_host::client::ClientError;

/// A short, countable name for a failure: `auth:<condition>`, `stream-error:<condition>`,
/// `io:<kind>`, `timeout:<what>`, `tls`, `closed`, `protocol`, `sasl`, `server-proof-mismatch`.
pub fn failure_kind(e: &ClientError) -> String {
    match e {
        ClientError::Io(e) => match e.raw_os_error() {
            Some(code) => format!("io:{:?}(os {code})", e.kind()),
            None => format!("io:{:?}", e.kind()),
        },
        ClientError::Tls(_) => "tls".into(),
        ClientError::Xml(_) => "xml".into(),
        ClientError::Timeout(w) => format!("timeout:{w}"),
        ClientError::Closed => "closed".into(),
        ClientError::StreamError { condition, .. } => format!("stream-error:{condition}"),
        ClientError::Protocol(_) => "protocol".into(),
        ClientError::Sasl(_) => "sasl".into(),
        ClientError::ServerProofMismatch => "server-proof-mismatch".into(),
        ClientError::AuthFailed { condition, .. } => format!("auth:{condition}"),
        other => format!("other:{other}"),
    }
}

#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Latencies of successful logins (or connection openings), microseconds.
    pub lat_us: Vec<u32>,
    pub failures: BTreeMap<String, u64>,
    pub rotations: u64,
    pub refreshes: u64,
    /// Logins whose TLS session was resumed.
    pub resumed: u64,
    /// Logins whose first flight the server accepted as TLS 1.3 early data.
    pub early_accepted: u64,
    /// First error text of each kind, for the human report.
    pub examples: BTreeMap<String, String>,
}

impl WorkerStats {
    pub fn ok(&mut self, started: std::time::Instant) {
        self.lat_us
            .push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
    }

    pub fn fail(&mut self, e: &ClientError) {
        let k = failure_kind(e);
        self.examples
            .entry(k.clone())
            .or_insert_with(|| e.to_string());
        *self.failures.entry(k).or_default() += 1;
    }

    pub fn merge(&mut self, o: WorkerStats) {
        self.lat_us.extend(o.lat_us);
        for (k, v) in o.failures {
            *self.failures.entry(k).or_default() += v;
        }
        for (k, v) in o.examples {
            self.examples.entry(k).or_insert(v);
        }
        self.rotations += o.rotations;
        self.refreshes += o.refreshes;
        self.resumed += o.resumed;
        self.early_accepted += o.early_accepted;
    }

    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    /// One line per failure kind with an example, for the human report.
    pub fn failure_lines(&self) -> String {
        let mut o = String::new();
        for (k, v) in &self.failures {
            let e = self.examples.get(k).map_or("", String::as_str);
            o.push_str(&format!("failure {k}: {v} (e.g. {e})\n"));
        }
        o
    }
}

/// The `p`th percentile of sorted microsecond latencies, in milliseconds.
pub fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)] as f64 / 1000.0
}

/// Rounded to microsecond precision for the report (JSON numbers stay readable).
pub fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
