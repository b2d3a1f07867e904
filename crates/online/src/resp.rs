//! A lean pipelined Redis client for the server's read path: one TCP connection,
//! a writer task that sends every queued request in one write, and a reader task
//! that parses RESP2 replies in place and hands each request its bytes (no copy)
//! and the spans of its values. Concurrent requests share the connection, their
//! commands pipelined together, as redis-rs's multiplexed connection does, but
//! without a value tree per reply: a 100-entity read is a few allocations.
//!
//! The parser ([`parse_reply`]) is pure and tested on its own; the tasks do the I/O.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

/// One element of a reply: a span of the request's bytes, or null.
pub(crate) type Span = Option<(usize, usize)>;

/// A request's replies: its bytes, and each reply's elements (an array's items;
/// a bulk string, integer or status is one element).
#[derive(Debug, Default)]
pub(crate) struct Replies {
    pub data: Bytes,
    pub elements: Vec<Span>,
    /// Elements per reply, in order.
    pub counts: Vec<usize>,
}

struct Job {
    bytes: Vec<u8>,
    replies: usize,
    done: oneshot::Sender<Result<Replies, String>>,
}

struct Pending {
    replies: usize,
    done: oneshot::Sender<Result<Replies, String>>,
}

struct Shared {
    /// Requests written and not yet answered, in order.
    queue: Mutex<VecDeque<Pending>>,
    dead: AtomicBool,
}

impl Shared {
    /// Marks the connection dead and fails every request waiting on it.
    fn fail(&self, why: &str) {
        let drained: Vec<Pending> = match self.queue.lock() {
            Ok(mut q) => {
                self.dead.store(true, Ordering::SeqCst);
                q.drain(..).collect()
            }
            Err(_) => return,
        };
        for p in drained {
            let _ = p.done.send(Err(why.to_string()));
        }
    }
}

/// A pipelined connection; cheap to share (`Arc`), usable from any task.
pub(crate) struct Pipelined {
    jobs: mpsc::UnboundedSender<Job>,
    shared: Arc<Shared>,
}

/// What one parsed reply was: its end, and the server's error if it was one.
#[derive(Debug, PartialEq)]
pub(crate) struct Parsed {
    pub end: usize,
    pub error: Option<String>,
}

/// Parses the reply that starts at `buf[pos]`: `Ok(None)` when more bytes are
/// needed (nothing is pushed then); else its elements are pushed to `out` as
/// spans of `buf`. Nested arrays are not read (no command here answers one).
pub(crate) fn parse_reply(buf: &[u8], pos: usize, out: &mut Vec<Span>) -> Result<Option<Parsed>, String> {
    let mark = out.len();
    let r = parse_at(buf, pos, out, true);
    if !matches!(r, Ok(Some(_))) {
        out.truncate(mark);
    }
    r
}

/// A line's end (`\r\n`) from `pos`: the index of `\r`.
fn line_end(buf: &[u8], pos: usize) -> Option<usize> {
    let mut at = pos;
    loop {
        let i = at + buf.get(at..)?.iter().position(|&b| b == b'\r')?;
        match buf.get(i + 1) {
            None => return None,
            Some(b'\n') => return Some(i),
            Some(_) => at = i + 1,
        }
    }
}

fn number(line: &[u8]) -> Result<i64, String> {
    let bad = || format!("Redis sent a malformed length {:?}", String::from_utf8_lossy(line));
    let (negative, digits) = match line.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, line),
    };
    if digits.is_empty() || digits.len() > 18 {
        return Err(bad());
    }
    let mut n: i64 = 0;
    for d in digits {
        if !d.is_ascii_digit() {
            return Err(bad());
        }
        n = n * 10 + i64::from(d - b'0');
    }
    Ok(if negative { -n } else { n })
}

/// A bulk string's header, `$<digits>\r\n`, read in one pass (most elements of a
/// reply are these): `Some((length, where its bytes start))`, `None` when the
/// header is not all there yet or is not of that simple form (a null, a
/// malformed one: [`parse_at`]'s general path decides).
fn bulk_header(buf: &[u8], pos: usize) -> Option<(usize, usize)> {
    let mut at = pos + 1;
    let mut n = 0usize;
    while let Some(&d) = buf.get(at) {
        if !d.is_ascii_digit() || at - pos > 18 {
            break;
        }
        n = n * 10 + usize::from(d - b'0');
        at += 1;
    }
    (at > pos + 1 && buf.get(at) == Some(&b'\r') && buf.get(at + 1) == Some(&b'\n')).then_some((n, at + 2))
}

fn parse_at(buf: &[u8], pos: usize, out: &mut Vec<Span>, top: bool) -> Result<Option<Parsed>, String> {
    let Some(&kind) = buf.get(pos) else { return Ok(None) };
    if kind == b'$' {
        let (n, next) = match bulk_header(buf, pos) {
            Some(header) => header,
            None => {
                let Some(eol) = line_end(buf, pos + 1) else { return Ok(None) };
                let n = number(&buf[pos + 1..eol])?;
                if n < 0 {
                    out.push(None);
                    return Ok(Some(Parsed { end: eol + 2, error: None }));
                }
                (n as usize, eol + 2)
            }
        };
        let end = next + n;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        out.push(Some((next, end)));
        return Ok(Some(Parsed { end: end + 2, error: None }));
    }
    let Some(eol) = line_end(buf, pos + 1) else { return Ok(None) };
    let line = &buf[pos + 1..eol];
    let next = eol + 2;
    match kind {
        b'+' | b':' => {
            out.push(Some((pos + 1, eol)));
            Ok(Some(Parsed { end: next, error: None }))
        }
        b'-' => Ok(Some(Parsed { end: next, error: Some(String::from_utf8_lossy(line).into_owned()) })),
        b'*' if top => {
            let n = number(line)?;
            let mut at = next;
            let mut error = None;
            for _ in 0..n.max(0) {
                match parse_at(buf, at, out, false)? {
                    None => return Ok(None),
                    Some(p) => {
                        at = p.end;
                        error = error.or(p.error);
                    }
                }
            }
            Ok(Some(Parsed { end: at, error }))
        }
        other => Err(format!("Redis sent a reply this client does not read (type byte {:?})", other as char)),
    }
}

impl Pipelined {
    /// Connects (within `timeout`), authenticates and selects `db`, then starts
    /// the connection's two tasks on the current runtime.
    pub(crate) async fn connect(
        address: &str,
        password: Option<&str>,
        db: i64,
        timeout: Duration,
    ) -> Result<Pipelined, String> {
        let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address))
            .await
            .map_err(|_| format!("could not connect within {timeout:?}"))?
            .map_err(|e| format!("could not connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let (hello, replies) = handshake(password, db);
        let mut buf = BytesMut::with_capacity(64 * 1024);
        if replies > 0 {
            let handshake = async {
                wr.write_all(&hello).await.map_err(|e| e.to_string())?;
                let mut pos = 0;
                let mut seen = 0;
                let mut scratch = Vec::new();
                while seen < replies {
                    match parse_reply(&buf, pos, &mut scratch)? {
                        Some(p) => {
                            if let Some(e) = p.error {
                                return Err(e);
                            }
                            pos = p.end;
                            seen += 1;
                        }
                        None => {
                            if rd.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                                return Err("the connection closed".to_string());
                            }
                        }
                    }
                }
                let _ = buf.split_to(pos);
                Ok(())
            };
            tokio::time::timeout(timeout, handshake).await.map_err(|_| format!("no answer within {timeout:?}"))??;
        }
        let shared = Arc::new(Shared { queue: Mutex::new(VecDeque::new()), dead: AtomicBool::new(false) });
        let (jobs, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(wr, rx, shared.clone()));
        tokio::spawn(read_loop(rd, buf, shared.clone()));
        Ok(Pipelined { jobs, shared })
    }

    /// Whether requests can still go through (the tasks run and no I/O failed).
    pub(crate) fn usable(&self) -> bool {
        !self.shared.dead.load(Ordering::SeqCst) && !self.jobs.is_closed()
    }

    /// Sends packed commands (`replies` of them) and waits for their replies.
    /// A reply that is an error fails the request with Redis's message; a
    /// timeout or broken connection fails it and marks the connection dead.
    pub(crate) async fn call(&self, bytes: Vec<u8>, replies: usize, timeout: Duration) -> Result<Replies, String> {
        let (done, answer) = oneshot::channel();
        self.jobs.send(Job { bytes, replies, done }).map_err(|_| "the connection closed".to_string())?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("the connection closed".to_string()),
            Err(_) => {
                let why = format!("no answer within {timeout:?}");
                self.shared.fail(&why);
                Err(why)
            }
        }
    }
}

/// Sends jobs as they come, every job queued by then in one write.
async fn write_loop(
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Job>,
    shared: Arc<Shared>,
) {
    let mut out = Vec::new();
    while let Some(job) = rx.recv().await {
        out.clear();
        let mut next = Some(job);
        while let Some(job) = next.take().or_else(|| rx.try_recv().ok()) {
            let Ok(mut q) = shared.queue.lock() else { return };
            if shared.dead.load(Ordering::SeqCst) {
                drop(q);
                let _ = job.done.send(Err("the connection failed".to_string()));
                continue;
            }
            q.push_back(Pending { replies: job.replies, done: job.done });
            drop(q);
            if out.is_empty() {
                out = job.bytes;
            } else {
                out.extend_from_slice(&job.bytes);
            }
        }
        if out.is_empty() {
            continue;
        }
        if let Err(e) = wr.write_all(&out).await {
            shared.fail(&format!("could not send to Redis: {e}"));
            return;
        }
    }
}

/// Reads replies and answers the queued requests in order.
async fn read_loop(mut rd: tokio::net::tcp::OwnedReadHalf, mut buf: BytesMut, shared: Arc<Shared>) {
    // The front request's progress: where its next reply starts, its elements so
    // far, its replies parsed, and the first error among them.
    let mut pos = 0;
    let mut elements: Vec<Span> = Vec::new();
    let mut counts: Vec<usize> = Vec::new();
    let mut error: Option<String> = None;
    loop {
        loop {
            let wanted = match shared.queue.lock() {
                Ok(q) => q.front().map(|p| p.replies),
                Err(_) => return,
            };
            let Some(wanted) = wanted else {
                if !buf.is_empty() {
                    shared.fail("Redis sent a reply nobody asked for");
                    return;
                }
                break;
            };
            let mut complete = true;
            while counts.len() < wanted {
                let before = elements.len();
                match parse_reply(&buf, pos, &mut elements) {
                    Ok(Some(p)) => {
                        pos = p.end;
                        counts.push(elements.len() - before);
                        error = error.or(p.error);
                    }
                    Ok(None) => {
                        complete = false;
                        break;
                    }
                    Err(e) => {
                        shared.fail(&e);
                        return;
                    }
                }
            }
            if !complete {
                break;
            }
            let data = buf.split_to(pos).freeze();
            let answer = match error.take() {
                Some(e) => Err(e),
                None => {
                    // The next request's vectors sized as this one's: one allocation, not a regrowth.
                    let (e, c) = (elements.len(), counts.len());
                    let elements = std::mem::replace(&mut elements, Vec::with_capacity(e));
                    Ok(Replies { data, elements, counts: std::mem::replace(&mut counts, Vec::with_capacity(c)) })
                }
            };
            elements.clear();
            counts.clear();
            pos = 0;
            let front = shared.queue.lock().ok().and_then(|mut q| q.pop_front());
            if let Some(p) = front {
                let _ = p.done.send(answer);
            }
        }
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) => {
                shared.fail("Redis closed the connection");
                return;
            }
            Ok(_) => {}
            Err(e) => {
                shared.fail(&format!("could not read from Redis: {e}"));
                return;
            }
        }
    }
}

/// A blocking connection for bulk writes: one packed pipeline out, its replies
/// back, parsed in place as the pipelined reader does.
pub(crate) struct Blocking {
    stream: std::net::TcpStream,
    buf: Vec<u8>,
}

impl Blocking {
    pub(crate) fn connect(
        address: &str,
        password: Option<&str>,
        db: i64,
        timeout: Duration,
    ) -> Result<Blocking, String> {
        use std::net::ToSocketAddrs;
        let addrs = address.to_socket_addrs().map_err(|e| format!("bad address {address}: {e}"))?;
        let mut last = format!("no address for {address}");
        for addr in addrs {
            match std::net::TcpStream::connect_timeout(&addr, timeout) {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
                    stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
                    let mut c = Blocking { stream, buf: Vec::with_capacity(64 * 1024) };
                    let (hello, replies) = handshake(password, db);
                    if replies > 0 {
                        c.round_trip(&hello, replies)?;
                    }
                    return Ok(c);
                }
                Err(e) => last = format!("could not connect: {e}"),
            }
        }
        Err(last)
    }

    /// Sends `out` (`replies` commands) and reads every reply: each reply's
    /// elements as spans of [`Blocking::data`]. An error reply fails the call
    /// once all replies are read, so the connection stays usable; an I/O error
    /// or timeout leaves it unusable (drop it).
    pub(crate) fn round_trip(&mut self, out: &[u8], replies: usize) -> Result<(Vec<Span>, Vec<usize>), String> {
        use std::io::{Read, Write};
        self.stream.write_all(out).map_err(|e| format!("could not send to Redis: {e}"))?;
        self.buf.clear();
        let (mut pos, mut elements, mut counts, mut error) = (0, Vec::new(), Vec::with_capacity(replies), None);
        while counts.len() < replies {
            let before = elements.len();
            match parse_reply(&self.buf, pos, &mut elements)? {
                Some(p) => {
                    pos = p.end;
                    counts.push(elements.len() - before);
                    error = error.or(p.error);
                }
                None => {
                    let filled = self.buf.len();
                    self.buf.resize(filled + 64 * 1024, 0);
                    let read = self.stream.read(&mut self.buf[filled..]);
                    self.buf.truncate(filled + *read.as_ref().unwrap_or(&0));
                    match read {
                        Ok(0) => return Err("Redis closed the connection".into()),
                        Ok(_) => {}
                        Err(e) => return Err(format!("could not read from Redis: {e}")),
                    }
                }
            }
        }
        if pos != self.buf.len() {
            return Err("Redis sent a reply nobody asked for".into());
        }
        match error {
            Some(e) => Err(e),
            None => Ok((elements, counts)),
        }
    }

    /// The last round trip's reply bytes.
    pub(crate) fn data(&self) -> &[u8] {
        &self.buf
    }
}

/// What a new connection sends first: `AUTH` and `SELECT` where needed, and how
/// many replies they get.
fn handshake(password: Option<&str>, db: i64) -> (Vec<u8>, usize) {
    let mut hello = Vec::new();
    let mut replies = 0;
    if let Some(p) = password {
        pack(&mut hello, &[b"AUTH", p.as_bytes()]);
        replies += 1;
    }
    if db != 0 {
        pack(&mut hello, &[b"SELECT", db.to_string().as_bytes()]);
        replies += 1;
    }
    (hello, replies)
}

/// Appends one command in RESP (an array of bulk strings).
pub(crate) fn pack(out: &mut Vec<u8>, args: &[&[u8]]) {
    header(out, b'*', args.len());
    for a in args {
        bulk(out, a);
    }
}

/// `<lead><n>\r\n`.
pub(crate) fn header(out: &mut Vec<u8>, lead: u8, n: usize) {
    out.push(lead);
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// One bulk string argument.
pub(crate) fn bulk(out: &mut Vec<u8>, arg: &[u8]) {
    header(out, b'$', arg.len());
    out.extend_from_slice(arg);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(buf: &[u8]) -> (Vec<Span>, Vec<Parsed>) {
        let (mut out, mut parsed, mut pos) = (Vec::new(), Vec::new(), 0);
        while pos < buf.len() {
            let p = parse_reply(buf, pos, &mut out).unwrap().expect("complete");
            pos = p.end;
            parsed.push(p);
        }
        (out, parsed)
    }

    #[test]
    fn arrays_of_bulk_strings_and_nulls_become_spans() {
        let buf = b"*3\r\n$3\r\nabc\r\n$-1\r\n$0\r\n\r\n:42\r\n+OK\r\n";
        let (spans, parsed) = parse_all(buf);
        let text: Vec<Option<&[u8]>> = spans.iter().map(|s| s.map(|(a, b)| &buf[a..b])).collect();
        assert_eq!(text, vec![Some(&b"abc"[..]), None, Some(b""), Some(b"42"), Some(b"OK")]);
        assert_eq!(parsed.len(), 3);
        assert!(parsed.iter().all(|p| p.error.is_none()));
    }

    #[test]
    fn binary_values_may_hold_crlf() {
        let buf = b"$4\r\n\r\n\r\n\r\n";
        let (spans, _) = parse_all(buf);
        assert_eq!(spans, vec![Some((4, 8))]);
    }

    #[test]
    fn an_incomplete_reply_pushes_nothing_at_any_cut() {
        let full = b"*2\r\n$5\r\nhello\r\n$-1\r\n";
        for cut in 0..full.len() {
            let mut out = vec![Some((0, 0))];
            assert_eq!(parse_reply(&full[..cut], 0, &mut out).unwrap(), None, "cut at {cut}");
            assert_eq!(out.len(), 1, "cut at {cut}");
        }
        let mut out = Vec::new();
        assert_eq!(parse_reply(full, 0, &mut out).unwrap(), Some(Parsed { end: full.len(), error: None }));
    }

    #[test]
    fn errors_are_read_to_their_end_and_reported() {
        let buf = b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n*1\r\n$1\r\nx\r\n";
        let (spans, parsed) = parse_all(buf);
        assert!(parsed[0].error.as_deref().unwrap().starts_with("WRONGTYPE"));
        assert_eq!(spans.len(), 1);
        assert!(parse_reply(b"~1\r\n", 0, &mut Vec::new()).is_err(), "a RESP3 set is not read");
        assert!(parse_reply(b"$x\r\n", 0, &mut Vec::new()).is_err());
        assert!(parse_reply(b"$\r\n", 0, &mut Vec::new()).is_err());
        assert!(parse_reply(b"$1-\r\n", 0, &mut Vec::new()).is_err());
        assert!(parse_reply(b"$1234567890123456789\r\n", 0, &mut Vec::new()).is_err(), "a length over 18 digits");
        let (spans, _) = parse_all(b"$12\r\nhello world!\r\n");
        assert_eq!(spans, vec![Some((5, 17))]);
    }

    #[test]
    fn packed_commands_are_resp() {
        let mut out = Vec::new();
        pack(&mut out, &[b"HMGET", b"k\x00", b""]);
        assert_eq!(out, b"*3\r\n$5\r\nHMGET\r\n$2\r\nk\x00\r\n$0\r\n\r\n");
    }
}
