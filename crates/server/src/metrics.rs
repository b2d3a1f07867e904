//! Prometheus metrics in the text exposition format: request counts and latency
//! histograms per endpoint and status, online-store latency, entities served,
//! registry version and age.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, seconds.
const BUCKETS: [f64; 14] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += secs;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, c) in BUCKETS.iter().zip(self.counts) {
            cumulative += c;
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), Histogram>>,
    store: Mutex<Histogram>,
    entities: AtomicU64,
    store_errors: AtomicU64,
}

impl Metrics {
    pub fn request(&self, endpoint: &'static str, status: u16, took: Duration) {
        if let Ok(mut m) = self.requests.lock() {
            m.entry((endpoint, status)).or_default().observe(took.as_secs_f64());
        }
    }

    pub fn store_read(&self, took: Duration, entities: usize, ok: bool) {
        if let Ok(mut h) = self.store.lock() {
            h.observe(took.as_secs_f64());
        }
        if ok {
            self.entities.fetch_add(entities as u64, Ordering::Relaxed);
        } else {
            self.store_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The exposition text; `registry` is (version id, age in seconds, refresh errors).
    pub fn render(&self, registry: (&str, f64, u64)) -> String {
        let mut out = String::new();
        out.push_str("# HELP amora_http_requests_total HTTP requests by endpoint and status.\n");
        out.push_str("# TYPE amora_http_requests_total counter\n");
        let requests = self.requests.lock().map(|m| m.clone()).unwrap_or_default();
        for ((e, s), h) in &requests {
            let _ = writeln!(out, "amora_http_requests_total{{endpoint=\"{e}\",status=\"{s}\"}} {}", h.count);
        }
        out.push_str("# HELP amora_http_request_duration_seconds Request latency by endpoint and status.\n");
        out.push_str("# TYPE amora_http_request_duration_seconds histogram\n");
        for ((e, s), h) in &requests {
            h.render(&mut out, "amora_http_request_duration_seconds", &format!("endpoint=\"{e}\",status=\"{s}\""));
        }
        out.push_str("# HELP amora_online_store_read_duration_seconds Online store read latency.\n");
        out.push_str("# TYPE amora_online_store_read_duration_seconds histogram\n");
        if let Ok(h) = self.store.lock() {
            h.render(&mut out, "amora_online_store_read_duration_seconds", "");
        }
        out.push_str("# HELP amora_online_store_errors_total Online store reads that failed.\n");
        out.push_str("# TYPE amora_online_store_errors_total counter\n");
        let _ = writeln!(out, "amora_online_store_errors_total {}", self.store_errors.load(Ordering::Relaxed));
        out.push_str("# HELP amora_entities_served_total Entity rows answered by get-online-features.\n");
        out.push_str("# TYPE amora_entities_served_total counter\n");
        let _ = writeln!(out, "amora_entities_served_total {}", self.entities.load(Ordering::Relaxed));
        let (version, age, errors) = registry;
        out.push_str("# HELP amora_registry_info The registry version being served.\n");
        out.push_str("# TYPE amora_registry_info gauge\n");
        let _ = writeln!(out, "amora_registry_info{{version_id=\"{}\"}} 1", version.replace(['"', '\\', '\n'], "_"));
        out.push_str("# HELP amora_registry_age_seconds Seconds since the served registry was loaded.\n");
        out.push_str("# TYPE amora_registry_age_seconds gauge\n");
        let _ = writeln!(out, "amora_registry_age_seconds {age:.3}");
        out.push_str(
            "# HELP amora_registry_refresh_errors_total Registry refreshes that failed (the last good one is kept).\n",
        );
        out.push_str("# TYPE amora_registry_refresh_errors_total counter\n");
        let _ = writeln!(out, "amora_registry_refresh_errors_total {errors}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_labelled() {
        let m = Metrics::default();
        m.request("get-online-features", 200, Duration::from_micros(300));
        m.request("get-online-features", 200, Duration::from_millis(2));
        m.request("get-online-features", 404, Duration::from_micros(50));
        m.store_read(Duration::from_micros(80), 3, true);
        let text = m.render(("abc", 1.5, 0));
        assert!(
            text.contains("amora_http_requests_total{endpoint=\"get-online-features\",status=\"200\"} 2"),
            "{text}"
        );
        assert!(text.contains(
            "amora_http_request_duration_seconds_bucket{endpoint=\"get-online-features\",status=\"200\",le=\"0.0005\"} 1"
        ));
        assert!(text.contains(
            "amora_http_request_duration_seconds_bucket{endpoint=\"get-online-features\",status=\"200\",le=\"0.0025\"} 2"
        ));
        assert!(text.contains("amora_entities_served_total 3"));
        assert!(text.contains("amora_registry_info{version_id=\"abc\"} 1"));
    }
}
