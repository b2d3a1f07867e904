//! Redis in Feast's exact layout: one hash per (entity key, project) shared by all
//! views; field = murmur3_32(`view:feature`) as 4 little-endian bytes; `_ts:<view>` =
//! a serialized protobuf Timestamp; values = serialized `feast.types.Value`.
//! Writes replace a view's fields only when the event timestamp is strictly newer
//! (one pipelined HMGET round trip, then one pipelined HSET [+ EXPIRE] round trip);
//! reads are one pipelined round trip. Redis Cluster: pipelines are split by key
//! slot (binary keys, CRC16 with `{hash tag}` rules, by the redis crate) and sent
//! to each node.

use std::time::Duration;

use amora_proto::online::{
    decode_timestamp, encode_timestamp, encode_timestamp_into, feature_field, redis_key, timestamp_field,
};

use crate::resp::{self, Pipelined};
use crate::{Cells, OnlineError, OnlineStore, ViewRead, ViewRows, WriteRow};

/// Pipelined read connections per store, at most: one per thread that reads
/// (a thread-per-core server's workers each get their own).
const READERS: usize = 16;

/// This thread's reader connection among `n`: threads are numbered as they
/// first read, so each of up to `n` threads has its own.
fn reader_slot(n: usize) -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    thread_local!(static SLOT: usize = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    SLOT.with(|s| *s) % n
}

enum Client {
    Single(redis::Client),
    Cluster(redis::cluster::ClusterClient),
}

enum Conn {
    Single(redis::Connection),
    Cluster(Box<redis::cluster::ClusterConnection>),
}

pub struct RedisStore {
    client: Client,
    /// Every node of the connection string (all masters, for a cluster's SCAN).
    nodes: Vec<String>,
    address: String,
    password: Option<String>,
    db: i64,
    key_ttl_seconds: Option<u64>,
    timeout: Duration,
    pool: std::sync::Mutex<Vec<Conn>>,
    /// Blocking connections for a standalone server's packed writes ([`resp::Blocking`]).
    writers: std::sync::Mutex<Vec<resp::Blocking>>,
    /// Pipelined connections for async reads (standalone), by thread
    /// ([`reader_slot`]): concurrent requests of a thread share one, their
    /// commands sent together, replies parsed in place ([`resp`]).
    readers: Vec<std::sync::Mutex<Option<std::sync::Arc<Pipelined>>>>,
    /// Buffers for packed commands, reused: a fresh megabyte per batch costs
    /// more in page faults than the packing itself.
    buffers: std::sync::Mutex<Vec<Vec<u8>>>,
}

/// A pipeline of commands, for either kind of connection.
fn run<T: redis::FromRedisValue>(conn: &mut Conn, cmds: Vec<redis::Cmd>) -> redis::RedisResult<T> {
    match conn {
        Conn::Single(c) => {
            let mut p = redis::pipe();
            for cmd in cmds {
                p.add_command(cmd);
            }
            p.query(c)
        }
        Conn::Cluster(c) => {
            let mut p = redis::cluster::cluster_pipe();
            for cmd in cmds {
                p.add_command(cmd);
            }
            p.query(c.as_mut())
        }
    }
}

impl RedisStore {
    /// `connection_string` as Feast writes it: `host:port[,host:port...][,key=value...]`.
    /// Standalone uses the first node; a cluster uses them all as startup nodes.
    pub fn new(
        connection_string: &str,
        key_ttl_seconds: Option<u64>,
        timeout: Duration,
    ) -> Result<RedisStore, OnlineError> {
        RedisStore::open(connection_string, false, key_ttl_seconds, timeout)
    }

    pub fn new_cluster(
        connection_string: &str,
        key_ttl_seconds: Option<u64>,
        timeout: Duration,
    ) -> Result<RedisStore, OnlineError> {
        RedisStore::open(connection_string, true, key_ttl_seconds, timeout)
    }

    fn open(
        connection_string: &str,
        cluster: bool,
        key_ttl_seconds: Option<u64>,
        timeout: Duration,
    ) -> Result<RedisStore, OnlineError> {
        let mut nodes = Vec::new();
        let mut password = None;
        let mut db = 0i64;
        for part in connection_string.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some(("password", v)) => password = Some(v.to_string()),
                Some(("db", v)) => db = v.parse().unwrap_or(0),
                Some(_) => {}
                None => nodes.push(part.to_string()),
            }
        }
        if nodes.is_empty() {
            nodes.push("127.0.0.1:6379".into());
        }
        let auth = password.as_ref().map(|p| format!(":{p}@")).unwrap_or_default();
        let address = nodes.join(",");
        let bad =
            |e: redis::RedisError| OnlineError::Backend { store: format!("redis {address}"), message: e.to_string() };
        let client = if cluster {
            let urls: Vec<String> = nodes.iter().map(|n| format!("redis://{auth}{n}")).collect();
            let c = redis::cluster::ClusterClient::builder(urls)
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .retries(2)
                .build()
                .map_err(bad)?;
            Client::Cluster(c)
        } else {
            Client::Single(redis::Client::open(format!("redis://{auth}{}/{db}", nodes[0]).as_str()).map_err(bad)?)
        };
        Ok(RedisStore {
            client,
            nodes,
            address,
            password,
            db,
            key_ttl_seconds,
            timeout,
            pool: std::sync::Mutex::new(Vec::new()),
            writers: std::sync::Mutex::new(Vec::new()),
            readers: (0..READERS).map(|_| std::sync::Mutex::new(None)).collect(),
            buffers: std::sync::Mutex::new(Vec::new()),
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> OnlineError {
        OnlineError::Backend { store: format!("redis {}", self.address), message: e.to_string() }
    }

    fn connect(&self) -> redis::RedisResult<Conn> {
        Ok(match &self.client {
            Client::Single(client) => {
                let c = client.get_connection_with_timeout(self.timeout)?;
                c.set_read_timeout(Some(self.timeout))?;
                c.set_write_timeout(Some(self.timeout))?;
                Conn::Single(c)
            }
            Client::Cluster(client) => Conn::Cluster(Box::new(client.get_connection()?)),
        })
    }

    fn with_conn<T>(&self, f: impl FnOnce(&mut Conn) -> redis::RedisResult<T>) -> Result<T, OnlineError> {
        let pooled = self.pool.lock().map(|mut p| p.pop()).unwrap_or(None);
        let mut conn = match pooled {
            Some(c) => c,
            None => self.connect().map_err(|e| self.err(e))?,
        };
        let result = f(&mut conn);
        match &result {
            // A connection that failed is dropped; a healthy one goes back to the pool.
            Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_connection_refusal() => {}
            _ => {
                if let Ok(mut p) = self.pool.lock() {
                    p.push(conn);
                }
            }
        }
        result.map_err(|e| self.err(e))
    }

    /// A read on this thread's pipelined connection: one `HMGET` per key of the
    /// requested fields, or with `whole` one `HGETALL` (every field of the hash).
    async fn read_pipelined(
        &self,
        project: &str,
        entity_keys: &[Vec<u8>],
        views: &[ViewRead],
        whole: bool,
    ) -> Result<Cells, OnlineError> {
        if matches!(self.client, Client::Cluster(_)) || views.is_empty() || entity_keys.is_empty() {
            // A cluster reads through its blocking pooled connections.
            return self.read(project, entity_keys, views);
        }
        let slot = &self.readers[reader_slot(self.readers.len())];
        let cached = slot.lock().ok().and_then(|c| c.clone()).filter(|c| c.usable());
        let conn = match cached {
            Some(c) => c,
            None => {
                let c = Pipelined::connect(&self.nodes[0], self.password.as_deref(), self.db, self.timeout)
                    .await
                    .map_err(|e| self.err(e))?;
                let c = std::sync::Arc::new(c);
                if let Ok(mut slot) = slot.lock() {
                    *slot = Some(c.clone());
                }
                c
            }
        };
        let wanted = wanted_fields(views);
        let width = wanted.len();
        if whole {
            let packed = packed_hgetalls(project, entity_keys);
            let replies = conn.call(packed, entity_keys.len(), self.timeout).await.map_err(|e| self.err(e))?;
            let elements =
                pick_fields(&wanted, &replies.data, &replies.elements, &replies.counts).map_err(|e| self.err(e))?;
            return Ok(cells_of(views, replies.data, &elements, width));
        }
        let packed = packed_hmgets(project, entity_keys, &wanted);
        let replies = conn.call(packed, entity_keys.len(), self.timeout).await.map_err(|e| self.err(e))?;
        if replies.counts.iter().any(|&n| n != width) {
            return Err(self.err(format!("HMGET answered {:?} fields, not {width}", replies.counts)));
        }
        Ok(cells_of(views, replies.data, &replies.elements, width))
    }

    /// One packed pipeline of `p.count` commands on a pooled writer connection:
    /// `f` gets the replies' elements (per reply, in order) and their bytes. A
    /// connection that failed in any way is dropped, not pooled.
    fn round_trip<T>(
        &self,
        p: &Packed,
        f: impl FnOnce(&[u8], &[resp::Span], &[usize]) -> Result<T, OnlineError>,
    ) -> Result<T, OnlineError> {
        let pooled = self.writers.lock().map(|mut w| w.pop()).unwrap_or(None);
        let mut conn = match pooled {
            Some(c) => c,
            None => resp::Blocking::connect(&self.nodes[0], self.password.as_deref(), self.db, self.timeout)
                .map_err(|e| self.err(e))?,
        };
        let (elements, counts) = conn.round_trip(&p.buf, p.count).map_err(|e| self.err(e))?;
        let result = f(conn.data(), &elements, &counts);
        if let Ok(mut w) = self.writers.lock() {
            w.push(conn);
        }
        result
    }

    /// [`OnlineStore::write_views`] on a standalone server, in three round trips
    /// at most: one `EXISTS` over the keys; unless none exists, one `HMGET key
    /// _ts:<view>...` per entity key; then one `HSET` per entity with the fields
    /// of every view whose row is strictly newer (and `EXPIRE`).
    /// The commands are packed straight into one reused buffer (no command
    /// objects per row) and the replies checked as they come.
    fn write_views_packed(&self, project: &str, views: &[ViewRows<'_>]) -> Result<(), OnlineError> {
        let ts_fields: Vec<Vec<u8>> = views.iter().map(|v| timestamp_field(v.view)).collect();
        let fields: Vec<Vec<[u8; 4]>> =
            views.iter().map(|v| v.features.iter().map(|f| feature_field(v.view, f)).collect()).collect();
        // Rows by entity key (in order of first appearance), and per key each view's
        // newest row (the first of equals): `slots[group * views + view]`.
        const NONE: usize = usize::MAX;
        let nv = views.len();
        let total: usize = views.iter().map(|v| v.rows.len()).sum();
        let mut index: std::collections::HashMap<&[u8], usize, crate::FxBuild> =
            std::collections::HashMap::with_capacity_and_hasher(total, Default::default());
        let mut slots: Vec<usize> = Vec::with_capacity(total * nv);
        for (v, view) in views.iter().enumerate() {
            for (i, r) in view.rows.iter().enumerate() {
                let next = slots.len() / nv;
                let g = *index.entry(r.entity_key.as_slice()).or_insert(next);
                if g == next {
                    slots.extend(std::iter::repeat_n(NONE, nv));
                }
                let slot = &mut slots[g * nv + v];
                if *slot == NONE || r.event_ts > view.rows[*slot].event_ts {
                    *slot = i;
                }
            }
        }
        drop(index);
        // Each group's rows, `(view, row)`, in view order.
        let refs: Vec<(usize, usize)> =
            slots.iter().enumerate().filter(|(_, i)| **i != NONE).map(|(s, i)| (s % nv, *i)).collect();
        let row = |(v, i): (usize, usize)| &views[v].rows[i];
        let mut groups: Vec<std::ops::Range<usize>> = Vec::with_capacity(slots.len() / nv.max(1));
        let mut at = 0;
        for g in slots.chunks(nv.max(1)) {
            let n = g.iter().filter(|i| **i != NONE).count();
            groups.push(at..at + n);
            at += n;
        }
        if groups.is_empty() {
            return Ok(());
        }
        let key = |p: &mut Packed, r: &WriteRow| p.arg2(&r.entity_key, project.as_bytes());
        let buf = self.buffers.lock().ok().and_then(|mut b| b.pop()).unwrap_or_default();
        let mut p = Packed { buf, count: 0 };
        // One EXISTS over the batch's keys first: when none exists yet (a first
        // materialization, a new project) nothing is stored to compare with, and
        // the per-key HMGETs, most of the server's work besides the HSETs, are skipped.
        p.command(1 + groups.len());
        p.arg(b"EXISTS");
        for g in &groups {
            key(&mut p, row(refs[g.start]));
        }
        let existing = self.round_trip(&p, |data, elements, _| {
            elements
                .first()
                .copied()
                .flatten()
                .and_then(|(a, b)| std::str::from_utf8(&data[a..b]).ok()?.parse::<u64>().ok())
                .ok_or_else(|| self.err("EXISTS did not answer a count"))
        });
        p.buf.clear();
        p.count = 0;
        let stored = match existing {
            Ok(0) => Ok(vec![None; refs.len()]),
            Ok(_) => {
                for g in &groups {
                    p.command(2 + g.len());
                    p.arg(b"HMGET");
                    key(&mut p, row(refs[g.start]));
                    for (v, _) in &refs[g.clone()] {
                        p.arg(&ts_fields[*v]);
                    }
                }
                self.round_trip(&p, |data, elements, counts| {
                    if counts.iter().zip(&groups).any(|(n, g)| *n != g.len()) {
                        return Err(self.err("HMGET answered a different number of fields than asked"));
                    }
                    Ok(elements.iter().map(|e| e.and_then(|(a, b)| decode_timestamp(&data[a..b]))).collect::<Vec<_>>())
                })
            }
            Err(e) => Err(e),
        };
        let stored = match stored {
            Ok(s) => s,
            Err(e) => {
                self.recycle(p);
                return Err(e);
            }
        };
        p.buf.clear();
        p.count = 0;
        // Buffers reused from entity to entity: its rows to write, a timestamp's bytes.
        let mut newer: Vec<(usize, usize)> = Vec::with_capacity(nv);
        let mut ts = Vec::with_capacity(16);
        for g in &groups {
            newer.clear();
            newer.extend(
                refs[g.clone()]
                    .iter()
                    .zip(&stored[g.clone()])
                    .filter(|(r, old)| old.is_none_or(|old| row(**r).event_ts > old))
                    .map(|(r, _)| *r),
            );
            if newer.is_empty() {
                continue;
            }
            let first = row(newer[0]);
            p.command(2 + newer.iter().map(|(v, _)| 2 + 2 * fields[*v].len()).sum::<usize>());
            p.arg(b"HSET");
            key(&mut p, first);
            for &(v, i) in &newer {
                let r = row((v, i));
                p.arg(&ts_fields[v]);
                ts.clear();
                encode_timestamp_into(r.event_ts, &mut ts);
                p.arg(&ts);
                for (f, value) in fields[v].iter().zip(&r.values) {
                    p.arg(f);
                    p.arg(value);
                }
            }
            if let Some(ttl) = self.key_ttl_seconds {
                p.command(3);
                p.arg(b"EXPIRE");
                key(&mut p, first);
                p.arg(ttl.to_string().as_bytes());
            }
        }
        if p.count == 0 {
            self.recycle(p);
            return Ok(());
        }
        let written = self.round_trip(&p, |_, _, _| Ok(()));
        self.recycle(p);
        written
    }

    /// Returns a packing buffer to the pool (a few are kept, emptied).
    fn recycle(&self, mut p: Packed) {
        p.buf.clear();
        if let Ok(mut pool) = self.buffers.lock() {
            if pool.len() < 8 {
                pool.push(p.buf);
            }
        }
    }

    /// Keys matching `pattern` on every node (SCAN runs per node in a cluster).
    fn scan(&self, pattern: &str) -> Result<Vec<Vec<u8>>, OnlineError> {
        let nodes: Vec<String> = match &self.client {
            Client::Single(_) => vec![],
            Client::Cluster(_) => self.nodes.clone(),
        };
        let scan_one = |conn: &mut redis::Connection| -> redis::RedisResult<Vec<Vec<u8>>> {
            let iter: redis::Iter<Vec<u8>> =
                redis::cmd("SCAN").cursor_arg(0).arg("MATCH").arg(pattern).arg("COUNT").arg(1000).clone().iter(conn)?;
            iter.collect()
        };
        if nodes.is_empty() {
            return self.with_conn(|c| match c {
                Conn::Single(c) => scan_one(c),
                Conn::Cluster(_) => unreachable!("single client"),
            });
        }
        let auth = self.password.as_ref().map(|p| format!(":{p}@")).unwrap_or_default();
        let mut keys = Vec::new();
        for n in nodes {
            let client = redis::Client::open(format!("redis://{auth}{n}").as_str()).map_err(|e| self.err(e))?;
            let mut conn = client.get_connection_with_timeout(self.timeout).map_err(|e| self.err(e))?;
            // Replicas hold copies of their master's keys; masters are enough.
            let role: String = redis::cmd("ROLE")
                .query::<Vec<redis::Value>>(&mut conn)
                .ok()
                .and_then(|v| v.first().and_then(|x| redis::from_redis_value::<String>(x.clone()).ok()))
                .unwrap_or_default();
            if role == "slave" {
                continue;
            }
            keys.extend(scan_one(&mut conn).map_err(|e| self.err(e))?);
        }
        Ok(keys)
    }
}

impl OnlineStore for RedisStore {
    fn name(&self) -> String {
        format!("redis {}", self.address)
    }

    fn health(&self) -> Result<(), OnlineError> {
        // Not pipelined: a cluster routes a keyless PING to its nodes itself.
        self.with_conn(|c| match c {
            Conn::Single(c) => redis::cmd("PING").query::<redis::Value>(c).map(|_| ()),
            Conn::Cluster(c) => redis::cmd("PING").query::<redis::Value>(c.as_mut()).map(|_| ()),
        })
    }

    fn write(&self, project: &str, view: &str, features: &[String], rows: &[WriteRow]) -> Result<(), OnlineError> {
        if rows.is_empty() {
            return Ok(());
        }
        let ts_field = timestamp_field(view);
        let fields: Vec<[u8; 4]> = features.iter().map(|f| feature_field(view, f)).collect();
        if let Client::Single(_) = &self.client {
            return self.write_views_packed(project, &[ViewRows { view, features, rows }]);
        }
        let keys: Vec<Vec<u8>> = rows.iter().map(|r| redis_key(&r.entity_key, project)).collect();
        // Round trip 1: the stored timestamps.
        let stored: Vec<Option<Vec<u8>>> = self.with_conn(|c| {
            let cmds = keys.iter().map(|k| redis::cmd("HGET").arg(k).arg(&ts_field).clone()).collect();
            run(c, cmds)
        })?;
        let chosen = newest(rows, |i| stored[i].as_deref().and_then(decode_timestamp));
        if chosen.is_empty() {
            return Ok(());
        }
        // Round trip 2: HSET (and EXPIRE).
        self.with_conn(|c| {
            let mut cmds = Vec::with_capacity(chosen.len() * 2);
            for i in chosen {
                let (r, k) = (&rows[i], &keys[i]);
                let mut cmd = redis::cmd("HSET");
                cmd.arg(k).arg(&ts_field).arg(encode_timestamp(r.event_ts));
                for (f, v) in fields.iter().zip(&r.values) {
                    cmd.arg(&f[..]).arg(v);
                }
                cmds.push(cmd);
                if let Some(ttl) = self.key_ttl_seconds {
                    cmds.push(redis::cmd("EXPIRE").arg(k).arg(ttl).clone());
                }
            }
            run::<Vec<redis::Value>>(c, cmds).map(|_| ())
        })
    }

    /// A standalone server: yes (one hash per entity for every view).
    fn writes_views_together(&self) -> bool {
        matches!(self.client, Client::Single(_))
    }

    fn write_views(&self, project: &str, views: &[ViewRows<'_>]) -> Result<(), OnlineError> {
        match &self.client {
            Client::Single(_) => self.write_views_packed(project, views),
            Client::Cluster(_) => views.iter().try_for_each(|v| self.write(project, v.view, v.features, v.rows)),
        }
    }

    fn read(&self, project: &str, entity_keys: &[Vec<u8>], views: &[ViewRead]) -> Result<Cells, OnlineError> {
        if views.is_empty() || entity_keys.is_empty() {
            return Ok(Cells::from_parts(views, Default::default(), [], vec![None; entity_keys.len() * views.len()]));
        }
        // One HMGET per entity key with the fields of every view: one round trip.
        if let Client::Single(_) = &self.client {
            let wanted = wanted_fields(views);
            let width = wanted.len();
            let p = Packed { buf: packed_hmgets(project, entity_keys, &wanted), count: entity_keys.len() };
            return self.round_trip(&p, |data, elements, counts| {
                if counts.iter().any(|&n| n != width) {
                    return Err(self.err(format!("HMGET answered {counts:?} fields, not {width}")));
                }
                Ok(cells_of(views, bytes::Bytes::copy_from_slice(data), elements, width))
            });
        }
        let cmds = hmgets(project, entity_keys, views);
        let replies: Vec<Vec<Option<Vec<u8>>>> = self.with_conn(|c| run(c, cmds))?;
        let mut out = Cells::builder(views);
        for reply in replies {
            let mut reply = reply.into_iter();
            for v in views {
                out.push_stamp(reply.next().flatten().as_deref().and_then(decode_timestamp));
                for _ in &v.features {
                    out.push(reply.next().flatten().as_deref());
                }
            }
        }
        Ok(out.finish())
    }

    fn read_async<'a>(
        &'a self,
        project: &'a str,
        entity_keys: &'a [Vec<u8>],
        views: &'a [ViewRead],
    ) -> crate::ReadFuture<'a> {
        Box::pin(self.read_pipelined(project, entity_keys, views, false))
    }

    fn read_whole_async<'a>(
        &'a self,
        project: &'a str,
        entity_keys: &'a [Vec<u8>],
        views: &'a [ViewRead],
    ) -> crate::ReadFuture<'a> {
        Box::pin(self.read_pipelined(project, entity_keys, views, true))
    }

    fn delete_view(
        &self,
        project: &str,
        view: &str,
        join_keys: &[String],
        version: u32,
        features: &[String],
    ) -> Result<(), OnlineError> {
        // SCAN candidate keys (the project is the key's suffix), keep those that are
        // exactly this project's keys of these join keys, then HDEL the view's fields.
        let names: Vec<&str> = join_keys.iter().map(String::as_str).collect();
        let prefix = amora_proto::online::entity_key_prefix(&names, version);
        let mut fields: Vec<Vec<u8>> = vec![timestamp_field(view)];
        fields.extend(features.iter().map(|f| feature_field(view, f).to_vec()));
        let pattern = format!("*{}", glob_escape(project));
        let keys: Vec<Vec<u8>> = self
            .scan(&pattern)?
            .into_iter()
            .filter(|k| amora_proto::online::is_key_of(k, &prefix, names.len(), project))
            .collect();
        for chunk in keys.chunks(1000) {
            self.with_conn(|c| {
                let cmds = chunk.iter().map(|k| redis::cmd("HDEL").arg(k).arg(&fields).clone()).collect();
                run::<Vec<redis::Value>>(c, cmds).map(|_| ())
            })?;
        }
        Ok(())
    }
}

/// One `HMGET key _ts:<view> field... [_ts:<view2> field...]` per entity key.
fn hmgets(project: &str, entity_keys: &[Vec<u8>], views: &[ViewRead]) -> Vec<redis::Cmd> {
    let fields = wanted_fields(views);
    entity_keys.iter().map(|ek| redis::cmd("HMGET").arg(redis_key(ek, project)).arg(&fields).clone()).collect()
}

/// HMGET replies (`width` elements each: per view, `_ts:<view>` and then the
/// view's values, spans of `data`) -> [`Cells`].
fn cells_of(views: &[ViewRead], data: bytes::Bytes, elements: &[resp::Span], width: usize) -> Cells {
    let entities = elements.len() / width.max(1);
    let mut stamps = Vec::with_capacity(entities * views.len());
    let mut spans = Vec::with_capacity(entities * (width - views.len()));
    for reply in elements.chunks(width) {
        let mut at = 0;
        for v in views {
            stamps.push(reply[at].and_then(|(a, b)| decode_timestamp(&data[a..b])));
            spans.extend_from_slice(&reply[at + 1..at + 1 + v.features.len()]);
            at += 1 + v.features.len();
        }
    }
    Cells::from_parts(views, data, spans, stamps)
}

/// The fields an `HMGET` of `views` names, in its order: per view `_ts:<view>`,
/// then the view's features.
fn wanted_fields(views: &[ViewRead]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for v in views {
        out.push(timestamp_field(&v.view));
        out.extend(v.features.iter().map(|f| feature_field(&v.view, f).to_vec()));
    }
    out
}

/// `HGETALL key` per entity key.
fn packed_hgetalls(project: &str, entity_keys: &[Vec<u8>]) -> Vec<u8> {
    let mut p =
        Packed { buf: Vec::with_capacity(entity_keys.iter().map(|k| k.len() + project.len() + 32).sum()), count: 0 };
    for ek in entity_keys {
        p.command(2);
        p.arg(b"HGETALL");
        p.arg2(ek, project.as_bytes());
    }
    p.buf
}

/// `HGETALL` replies (field, value pairs; `counts` elements each) -> the
/// elements an `HMGET` of `wanted` would have answered, missing fields null.
/// Hashes written by one writer keep one field order, so each pair is first
/// tried at the place the previous hash had it.
fn pick_fields(
    wanted: &[Vec<u8>],
    data: &[u8],
    elements: &[resp::Span],
    counts: &[usize],
) -> Result<Vec<resp::Span>, String> {
    const NONE: usize = usize::MAX;
    let width = wanted.len();
    let mut out = vec![None; counts.len() * width];
    let mut order: Vec<usize> = Vec::new();
    let mut at = 0;
    for (e, &n) in counts.iter().enumerate() {
        if n % 2 != 0 || at + n > elements.len() {
            return Err(format!("HGETALL answered {n} elements, not field-value pairs"));
        }
        let row = &mut out[e * width..(e + 1) * width];
        for j in 0..n / 2 {
            let Some((a, b)) = elements[at + 2 * j] else { return Err("HGETALL answered a null field".into()) };
            let field = &data[a..b];
            let hit = order
                .get(j)
                .copied()
                .filter(|&w| w != NONE && wanted[w] == field)
                .or_else(|| wanted.iter().position(|w| w.as_slice() == field));
            if order.len() <= j {
                order.resize(j + 1, NONE);
            }
            order[j] = hit.unwrap_or(NONE);
            if let Some(w) = hit {
                row[w] = elements[at + 2 * j + 1];
            }
        }
        at += n;
    }
    Ok(out)
}

/// [`hmgets`] packed for the pipelined reader, naming `wanted` ([`wanted_fields`]).
fn packed_hmgets(project: &str, entity_keys: &[Vec<u8>], wanted: &[Vec<u8>]) -> Vec<u8> {
    let mut fields = Vec::new();
    wanted.iter().for_each(|f| resp::bulk(&mut fields, f));
    let per_key = 32 + project.len() + fields.len();
    let mut p = Packed { buf: Vec::with_capacity(entity_keys.iter().map(|k| k.len() + per_key).sum()), count: 0 };
    for ek in entity_keys {
        p.command(2 + wanted.len());
        p.arg(b"HMGET");
        p.arg2(ek, project.as_bytes());
        p.buf.extend_from_slice(&fields);
    }
    p.buf
}

/// Which rows to write: those strictly newer than what is stored (`stored(i)`,
/// microseconds), and of several rows for one key the newest (the first of equals).
fn newest(rows: &[WriteRow], stored: impl Fn(usize) -> Option<i64>) -> Vec<usize> {
    let mut order: Vec<usize> =
        (0..rows.len()).filter(|&i| stored(i).is_none_or(|old| rows[i].event_ts > old)).collect();
    order.sort_by(|&a, &b| rows[a].entity_key.cmp(&rows[b].entity_key).then(rows[b].event_ts.cmp(&rows[a].event_ts)));
    order.dedup_by(|later, first| rows[*later].entity_key == rows[*first].entity_key);
    order
}

/// Commands in Redis's wire protocol (RESP), packed into one buffer.
#[derive(Default)]
struct Packed {
    buf: Vec<u8>,
    count: usize,
}

impl Packed {
    fn number(&mut self, lead: u8, n: usize) {
        resp::header(&mut self.buf, lead, n);
    }

    /// Starts a command of `args` arguments (its name included).
    fn command(&mut self, args: usize) {
        self.count += 1;
        self.number(b'*', args);
    }

    fn arg(&mut self, bytes: &[u8]) {
        self.arg2(bytes, &[]);
    }

    /// One argument made of two byte strings (a Redis key: entity key, then project).
    fn arg2(&mut self, a: &[u8], b: &[u8]) {
        self.number(b'$', a.len() + b.len());
        self.buf.extend_from_slice(a);
        self.buf.extend_from_slice(b);
        self.buf.extend_from_slice(b"\r\n");
    }
}

fn glob_escape(s: &str) -> String {
    s.chars().flat_map(|c| if "*?[]\\".contains(c) { vec!['\\', c] } else { vec![c] }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_commands_are_what_the_client_library_sends() {
        let mut p = Packed::default();
        p.command(4);
        p.arg(b"HSET");
        p.arg2(b"\x00key", b"proj");
        p.arg(b"");
        p.arg(&[7u8; 300]);
        p.command(2);
        p.arg(b"GET");
        p.arg(b"k");
        let mut expected = redis::cmd("HSET").arg(b"\x00keyproj").arg(b"").arg(&[7u8; 300][..]).get_packed_command();
        expected.extend(redis::cmd("GET").arg("k").get_packed_command());
        assert_eq!(p.buf, expected);
        assert_eq!(p.count, 2);
        // The reader's HMGETs: what `hmgets` builds as commands.
        let views = [
            ViewRead { view: "v".into(), features: vec!["a".into(), "b".into()] },
            ViewRead { view: "w".into(), features: vec!["c".into()] },
        ];
        let keys = [b"\x01k".to_vec(), vec![]];
        let wanted = wanted_fields(&views);
        let packed = packed_hmgets("proj", &keys, &wanted);
        let expected: Vec<u8> = hmgets("proj", &keys, &views).iter().flat_map(|c| c.get_packed_command()).collect();
        assert_eq!((packed, wanted.len()), (expected, 5));
    }

    #[test]
    fn whole_records_answer_the_requested_fields_in_any_order() {
        let wanted: Vec<Vec<u8>> = [&b"_ts:v"[..], b"a", b"b"].map(<[u8]>::to_vec).to_vec();
        // Three hashes: in order, shuffled with an extra field, and empty.
        let data = b"_ts:vTaAbB".to_vec();
        let s = |a: usize, b: usize| Some((a, b));
        let (ts, t, a, av, b, bv) = (s(0, 5), s(5, 6), s(6, 7), s(7, 8), s(8, 9), s(9, 10));
        let extra = s(5, 6);
        let elements = vec![ts, t, a, av, b, bv, b, bv, extra, extra, ts, t, a, av];
        let got = pick_fields(&wanted, &data, &elements, &[6, 8, 0]).unwrap();
        assert_eq!(got, vec![t, av, bv, t, av, bv, None, None, None]);
        assert!(pick_fields(&wanted, &data, &elements[..3], &[3]).is_err());
    }

    #[test]
    fn only_rows_newer_than_stored_and_the_newest_per_key_are_written() {
        let row = |k: &[u8], ts| WriteRow { entity_key: k.to_vec(), event_ts: ts, values: Default::default() };
        let rows = [row(b"a", 5), row(b"b", 5), row(b"a", 7), row(b"c", 3), row(b"a", 7), row(b"d", 1)];
        let stored = [None, Some(5), None, Some(2), None, None];
        let mut chosen = newest(&rows, |i| stored[i]);
        chosen.sort();
        // b is not newer than stored; of a's rows the first with ts 7.
        assert_eq!(chosen, vec![2, 3, 5]);
    }
}
