//! The conformance suite every [`OnlineStore`] runs: the same cases, whatever the
//! backend. Each case uses its own project name, so suites can share a server.

use amora_proto::online::{serialize_entity_key, value::Val, KeyValue, Value};
use prost_value::encode;

use crate::{OnlineStore, ViewRead, WriteRow};

mod prost_value {
    use amora_proto::online::{value::Val, Value};
    pub fn encode(v: Option<Val>) -> Vec<u8> {
        prost::Message::encode_to_vec(&Value { val: v })
    }
}

fn key(user: i64) -> Vec<u8> {
    serialize_entity_key(&[("user_id", KeyValue::Int64(user))], 3)
}

fn row(user: i64, ts: i64, a: f64, b: Option<&str>) -> WriteRow {
    WriteRow {
        entity_key: key(user),
        event_ts: ts,
        values: vec![encode(Some(Val::DoubleVal(a))), encode(b.map(|s| Val::StringVal(s.into())))].into(),
    }
}

fn feats() -> Vec<String> {
    vec!["a".into(), "b".into()]
}

fn read_one(store: &dyn OnlineStore, project: &str, user: i64, view: &str) -> Vec<(Option<Value>, Option<i64>, bool)> {
    let out =
        store.read(project, &[key(user)], &[ViewRead { view: view.into(), features: feats() }]).expect("read").nested();
    out[0][0]
        .iter()
        .map(|c| (c.found.then(|| prost::Message::decode(c.value.as_slice()).expect("a Value")), c.event_ts, c.found))
        .collect()
}

/// Runs every case against `store`. `project` must be unique to this run.
pub fn run_all(store: &dyn OnlineStore, project: &str) {
    store.health().expect("a reachable store reports itself healthy");
    write_then_read(store, &format!("{project}_rw"));
    only_newer_wins(store, &format!("{project}_newer"));
    views_are_independent(store, &format!("{project}_views"));
    views_written_together_as_apart(store, &format!("{project}_together"));
    projects_are_isolated(store, &format!("{project}_iso"));
    delete_view_removes_only_that_view(store, &format!("{project}_del"));
    async_reads_match_blocking_reads(store, &format!("{project}_async"));
}

/// `read_async` and `read_whole_async` (a server's paths) answer exactly what
/// `read` does, found and missing keys alike, request after request on their
/// shared connection.
fn async_reads_match_blocking_reads(store: &dyn OnlineStore, p: &str) {
    store.write(p, "v", &feats(), &[row(1, 1_000_000, 1.5, Some("x")), row(2, 2_000_000, 2.5, None)]).unwrap();
    // Entity 2 also has `w` and entity 1 a view nobody reads: records of different shapes.
    store.write(p, "w", &feats(), &[row(2, 3_000_000, 3.5, Some("y"))]).unwrap();
    store.write(p, "unread", &feats(), &[row(1, 4_000_000, 4.5, Some("z"))]).unwrap();
    let views = [ViewRead { view: "v".into(), features: feats() }, ViewRead { view: "w".into(), features: feats() }];
    let keys: Vec<Vec<u8>> = (0..4).map(key).collect();
    let blocking = store.read(p, &keys, &views).unwrap().nested();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        for _ in 0..16 {
            assert_eq!(store.read_async(p, &keys, &views).await.unwrap().nested(), blocking);
            // Whole records answer the same, whatever else they hold.
            assert_eq!(store.read_whole_async(p, &keys, &views).await.unwrap().nested(), blocking);
        }
        // Many reads at once (pipelined together on a shared connection), each
        // of different keys: each gets its own answer.
        let views = &views;
        let reads = (0..64usize).map(|i| {
            let keys: Vec<Vec<u8>> = (0..=(i % 4) as i64).rev().map(key).collect();
            async move { (keys.len(), store.read_async(p, &keys, views).await.unwrap().nested()) }
        });
        for (n, got) in futures_join(reads).await {
            let want: Vec<_> = blocking[..n].iter().rev().cloned().collect();
            assert_eq!(got, want);
        }
    });
    // A runtime that ends takes its connections' tasks with it; the next one reads on.
    for _ in 0..2 {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async { assert_eq!(store.read_async(p, &keys, &views).await.unwrap().nested(), blocking) });
    }
}

/// Runs futures concurrently on the current task, results in order.
async fn futures_join<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in pinned.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *o = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

fn double(v: f64) -> Option<Value> {
    Some(Value { val: Some(Val::DoubleVal(v)) })
}

fn write_then_read(store: &dyn OnlineStore, p: &str) {
    store.write(p, "v", &feats(), &[row(1, 1_000_000, 1.5, Some("x")), row(2, 2_000_000, 2.5, None)]).unwrap();
    let r = read_one(store, p, 1, "v");
    assert_eq!(r[0], (double(1.5), Some(1_000_000), true));
    assert_eq!(r[1].0, Some(Value { val: Some(Val::StringVal("x".into())) }));
    // A null value is stored and read back as an empty Value.
    let r = read_one(store, p, 2, "v");
    assert_eq!(r[1], (Some(Value { val: None }), Some(2_000_000), true));
    // A missing entity: not found.
    let r = read_one(store, p, 3, "v");
    assert!(r.iter().all(|c| !c.2 && c.1.is_none()), "{r:?}");
    // Reads return entities in the order asked.
    let out = store
        .read(p, &[key(2), key(3), key(1)], &[ViewRead { view: "v".into(), features: vec!["a".into()] }])
        .unwrap()
        .nested();
    let vals: Vec<bool> = out.iter().map(|e| e[0][0].found).collect();
    assert_eq!(vals, vec![true, false, true]);
}

fn only_newer_wins(store: &dyn OnlineStore, p: &str) {
    store.write(p, "v", &feats(), &[row(1, 10, 1.0, None)]).unwrap();
    store.write(p, "v", &feats(), &[row(1, 10, 2.0, None)]).unwrap();
    assert_eq!(read_one(store, p, 1, "v")[0].0, double(1.0), "an equal timestamp does not replace");
    store.write(p, "v", &feats(), &[row(1, 5, 3.0, None)]).unwrap();
    assert_eq!(read_one(store, p, 1, "v")[0].0, double(1.0), "an older one does not either");
    store.write(p, "v", &feats(), &[row(1, 11, 4.0, None), row(1, 12, 5.0, None), row(1, 9, 6.0, None)]).unwrap();
    assert_eq!(read_one(store, p, 1, "v")[0], (double(5.0), Some(12), true), "the newest in a batch wins");
}

fn views_are_independent(store: &dyn OnlineStore, p: &str) {
    store.write(p, "v1", &feats(), &[row(1, 100, 1.0, None)]).unwrap();
    store.write(p, "v2", &feats(), &[row(1, 50, 2.0, None)]).unwrap();
    assert_eq!(read_one(store, p, 1, "v1")[0].0, double(1.0));
    assert_eq!(read_one(store, p, 1, "v2")[0], (double(2.0), Some(50), true));
    // Reading a feature the view does not have: not found, the view's timestamp still known.
    let out =
        store.read(p, &[key(1)], &[ViewRead { view: "v1".into(), features: vec!["zz".into()] }]).unwrap().nested();
    assert!(!out[0][0][0].found);
}

/// `write_views` is, view by view, what `write` does: strictly newer rows only,
/// the newest of a batch, and other views' values untouched.
fn views_written_together_as_apart(store: &dyn OnlineStore, p: &str) {
    use crate::ViewRows;
    let (f1, f2) = (feats(), vec!["b".to_string()]);
    store.write(p, "v1", &f1, &[row(1, 100, 1.0, None)]).unwrap();
    store.write(p, "v3", &f1, &[row(1, 1, 7.0, None)]).unwrap();
    let v1 = [row(1, 100, 2.0, None), row(2, 5, 3.0, Some("x")), row(2, 6, 4.0, None)];
    let v2 =
        [WriteRow { entity_key: key(1), event_ts: 20, values: vec![encode(Some(Val::StringVal("y".into())))].into() }];
    store
        .write_views(
            p,
            &[ViewRows { view: "v1", features: &f1, rows: &v1 }, ViewRows { view: "v2", features: &f2, rows: &v2 }],
        )
        .unwrap();
    assert_eq!(read_one(store, p, 1, "v1")[0], (double(1.0), Some(100), true), "an equal timestamp does not replace");
    assert_eq!(read_one(store, p, 2, "v1")[0], (double(4.0), Some(6), true), "the newest in a batch wins");
    let b = store.read(p, &[key(1)], &[ViewRead { view: "v2".into(), features: f2.clone() }]).unwrap().nested();
    assert_eq!(b[0][0][0].value, encode(Some(Val::StringVal("y".into()))));
    assert_eq!(b[0][0][0].event_ts, Some(20));
    assert_eq!(read_one(store, p, 1, "v3")[0], (double(7.0), Some(1), true), "a view not written is untouched");
    let none = store.read(p, &[key(2)], &[ViewRead { view: "v2".into(), features: f2 }]).unwrap().nested();
    assert!(!none[0][0][0].found, "an entity without a v2 row has none");
}

fn projects_are_isolated(store: &dyn OnlineStore, p: &str) {
    let other = format!("my{p}");
    store.write(p, "v", &feats(), &[row(1, 100, 1.0, None)]).unwrap();
    store.write(&other, "v", &feats(), &[row(1, 100, 9.0, None)]).unwrap();
    assert_eq!(read_one(store, p, 1, "v")[0].0, double(1.0));
    assert_eq!(read_one(store, &other, 1, "v")[0].0, double(9.0));
    store.delete_view(p, "v", &["user_id".into()], 3, &feats()).unwrap();
    assert_eq!(
        read_one(store, &other, 1, "v")[0].0,
        double(9.0),
        "another project (whose name ends the same) keeps its data"
    );
}

fn delete_view_removes_only_that_view(store: &dyn OnlineStore, p: &str) {
    store.write(p, "v1", &feats(), &[row(1, 100, 1.0, None), row(2, 100, 1.0, None)]).unwrap();
    store.write(p, "v2", &feats(), &[row(1, 100, 2.0, None)]).unwrap();
    store.delete_view(p, "v1", &["user_id".into()], 3, &feats()).unwrap();
    assert!(read_one(store, p, 1, "v1").iter().all(|c| !c.2));
    assert!(read_one(store, p, 2, "v1").iter().all(|c| !c.2));
    assert_eq!(read_one(store, p, 1, "v2")[0].0, double(2.0));
}
