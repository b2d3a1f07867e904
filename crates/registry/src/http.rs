//! One retry rule for the object stores' HTTP requests (GCS and S3).
//!
//! Object stores answer 429 and 5xx now and then under load (S3's `SlowDown`, GCS's
//! 503), and their SDKs retry them; so do we: up to [`ATTEMPTS`] sends with jittered
//! exponential backoff. A connection error is retried too, so that a store that is
//! down still fails within about a second. Any other status is the caller's to read.
//!
//! A conditional write retried after a 5xx may find that its first send landed: it
//! then reads as a conflict, and the caller re-reads, finds its change there and
//! reports no change. Nothing is lost; at worst that version enters the history on
//! the next apply as one written outside amora.

use std::time::Duration;

const ATTEMPTS: u32 = 4;

/// Whether an answer is worth sending again.
fn transient(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Status(code, _) => matches!(code, 429 | 500 | 502 | 503 | 504),
        ureq::Error::Transport(_) => true,
    }
}

/// Sends `request` (with `body`, if any), retrying transient failures.
#[allow(clippy::result_large_err)] // ureq's own error type, as its `call` returns it
pub(crate) fn send(request: &ureq::Request, body: Option<&[u8]>) -> Result<ureq::Response, ureq::Error> {
    let mut attempt = 1;
    loop {
        let result = match body {
            None => request.clone().call(),
            Some(bytes) => request.clone().send_bytes(bytes),
        };
        match result {
            Err(e) if attempt < ATTEMPTS && transient(&e) => {
                let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]);
                let delay = Duration::from_millis(100 * (1 << (attempt - 1)) + jitter);
                tracing::warn!("{e}; retrying in {delay:?}");
                std::thread::sleep(delay);
                attempt += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    /// A server that answers the given statuses in turn, one per connection.
    fn serve(statuses: Vec<u16>) -> (String, std::thread::JoinHandle<usize>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/o", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let mut served = 0;
            for status in statuses {
                let (mut conn, _) = listener.accept().unwrap();
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).unwrap();
                let body = format!("status {status}");
                write!(
                    conn,
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
                served += 1;
            }
            served
        });
        (url, handle)
    }

    #[test]
    fn transient_statuses_are_retried_until_an_answer() {
        let (url, server) = serve(vec![500, 503, 200]);
        let resp = super::send(&ureq::get(&url), None).unwrap();
        assert_eq!(resp.into_string().unwrap(), "status 200");
        assert_eq!(server.join().unwrap(), 3);
    }

    #[test]
    fn other_statuses_are_answered_at_once() {
        let (url, server) = serve(vec![412]);
        match super::send(&ureq::put(&url), Some(b"x")) {
            Err(ureq::Error::Status(412, _)) => {}
            other => panic!("expected 412, got {other:?}"),
        }
        assert_eq!(server.join().unwrap(), 1);
    }

    #[test]
    fn a_store_that_keeps_failing_gives_its_last_answer() {
        let (url, server) = serve(vec![500, 500, 500, 500]);
        match super::send(&ureq::get(&url), None) {
            Err(ureq::Error::Status(500, r)) => assert_eq!(r.into_string().unwrap(), "status 500"),
            other => panic!("expected 500, got {other:?}"),
        }
        assert_eq!(server.join().unwrap(), 4);
    }
}
