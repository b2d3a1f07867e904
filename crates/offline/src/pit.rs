//! The point-in-time (as-of) join, over Arrow arrays. Pure: arrays in, indices out.
//!
//! For each entity row, the winning feature row shares the join keys and has
//! `entity_ts - ttl <= feature_ts <= entity_ts` (both inclusive; no lower bound when
//! ttl is `None`); the latest `feature_ts` wins, then the latest created timestamp,
//! then (exact ties) the row that comes last in the table. Null keys and null
//! timestamps never match.
//!
//! How: feature rows are bucketed by key (a hash map from key to a dense id, then a
//! counting sort), each bucket sorted by (ts, created, row); every entity row then
//! binary-searches its bucket's timestamps, laid out side by side. Entity rows are
//! grouped by key with a counting sort too (O(E), and the output is written back in
//! the entity order), so buckets are read in memory order, in parallel.
//! O((E + F) log F) for E entity rows and F feature rows.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use datafusion::arrow::array::{Array, ArrayRef, Int64Array, TimestampMicrosecondArray, UInt32Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::row::{RowConverter, SortField};

/// A fast, non-cryptographic hasher for join keys (FxHash's multiply-rotate).
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(buf));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_i64(&mut self, n: i64) {
        self.write_u64(n as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<K> = HashMap<K, u32, BuildHasherDefault<FxHasher>>;

/// Join keys turned into dense ids: feature rows get ids `0..n`, entity rows the id
/// of the same key or `None`.
enum Keys {
    Int64(FxMap<i64>),
    Rows(FxMap<Box<[u8]>>, RowConverter),
}

fn single_int64(keys: &[ArrayRef]) -> Option<&Int64Array> {
    match keys {
        [k] if k.data_type() == &DataType::Int64 => k.as_any().downcast_ref::<Int64Array>(),
        _ => None,
    }
}

fn any_null(keys: &[ArrayRef], row: usize) -> bool {
    keys.iter().any(|k| k.is_null(row))
}

impl Keys {
    /// Ids of the feature rows' keys (`u32::MAX` for a null key).
    fn build(feature_keys: &[ArrayRef]) -> Result<(Keys, Vec<u32>, u32), ArrowError> {
        let n = feature_keys.first().map_or(0, |k| k.len());
        let mut ids = Vec::with_capacity(n);
        if let Some(k) = single_int64(feature_keys) {
            let mut map = FxMap::<i64>::default();
            for i in 0..n {
                if k.is_null(i) {
                    ids.push(u32::MAX);
                    continue;
                }
                let next = map.len() as u32;
                ids.push(*map.entry(k.value(i)).or_insert(next));
            }
            let count = map.len() as u32;
            return Ok((Keys::Int64(map), ids, count));
        }
        let conv = RowConverter::new(feature_keys.iter().map(|k| SortField::new(k.data_type().clone())).collect())?;
        let rows = conv.convert_columns(feature_keys)?;
        let mut map = FxMap::<Box<[u8]>>::default();
        for i in 0..n {
            if any_null(feature_keys, i) {
                ids.push(u32::MAX);
                continue;
            }
            let next = map.len() as u32;
            let row = rows.row(i);
            let key: &[u8] = row.as_ref();
            let id = match map.get(key) {
                Some(id) => *id,
                None => {
                    map.insert(key.into(), next);
                    next
                }
            };
            ids.push(id);
        }
        let count = map.len() as u32;
        Ok((Keys::Rows(map, conv), ids, count))
    }

    /// Ids of the entity rows' keys.
    fn lookup(&self, entity_keys: &[ArrayRef]) -> Result<Vec<Option<u32>>, ArrowError> {
        let n = entity_keys.first().map_or(0, |k| k.len());
        match self {
            Keys::Int64(map) => {
                let k = single_int64(entity_keys)
                    .ok_or_else(|| ArrowError::InvalidArgumentError("entity key is not int64".into()))?;
                Ok((0..n).map(|i| if k.is_null(i) { None } else { map.get(&k.value(i)).copied() }).collect())
            }
            Keys::Rows(map, conv) => {
                let rows = conv.convert_columns(entity_keys)?;
                Ok((0..n)
                    .map(|i| {
                        let row = rows.row(i);
                        if any_null(entity_keys, i) {
                            None
                        } else {
                            map.get(row.as_ref()).copied()
                        }
                    })
                    .collect())
            }
        }
    }
}

/// Join-key columns in one type per kind (integers as Int64, strings as Utf8,
/// binaries as Binary), so equal keys compare and hash equal whatever their
/// width or layout in a given file.
pub(crate) fn canonical_keys(keys: &[ArrayRef]) -> Result<Vec<ArrayRef>, ArrowError> {
    use datafusion::arrow::compute::cast;
    keys.iter()
        .map(|k| match k.data_type() {
            t if t.is_integer() && t != &DataType::Int64 => cast(k, &DataType::Int64),
            DataType::LargeUtf8 | DataType::Utf8View => cast(k, &DataType::Utf8),
            DataType::LargeBinary | DataType::BinaryView => cast(k, &DataType::Binary),
            _ => Ok(k.clone()),
        })
        .collect()
}

/// The part (`0..parts`) of each row's join keys: a hash of the keys, the same for
/// equal keys whatever their integer width or string layout. Null keys fall anywhere.
pub fn part_of(keys: &[ArrayRef], parts: usize) -> Result<Vec<u32>, ArrowError> {
    let n = keys.first().map_or(0, |k| k.len());
    let keys = canonical_keys(keys)?;
    let reduce = |h: u64| ((u128::from(h) * parts as u128) >> 64) as u32;
    if let Some(k) = single_int64(&keys) {
        return Ok(k
            .values()
            .iter()
            .map(|v| {
                let mut h = FxHasher::default();
                h.write_i64(*v);
                reduce(h.finish())
            })
            .collect());
    }
    let conv = RowConverter::new(keys.iter().map(|k| SortField::new(k.data_type().clone())).collect())?;
    let rows = conv.convert_columns(&keys)?;
    Ok((0..n)
        .map(|i| {
            let mut h = FxHasher::default();
            h.write(rows.row(i).as_ref());
            reduce(h.finish())
        })
        .collect())
}

/// A counting sort of rows by key id: `ids` gives each row's id in `0..n_keys`, or
/// `None` to leave the row out. Returns `starts` (rows of id `k` are
/// `order[starts[k]..starts[k + 1]]`) and `order` (row numbers, in row order
/// within each id).
pub(crate) fn group_by_key(n_keys: u32, ids: impl Iterator<Item = Option<u32>> + Clone) -> (Vec<u32>, Vec<u32>) {
    let mut starts = vec![0u32; n_keys as usize + 1];
    for id in ids.clone().flatten() {
        starts[id as usize + 1] += 1;
    }
    for i in 0..n_keys as usize {
        starts[i + 1] += starts[i];
    }
    let mut fill = starts.clone();
    let mut order = vec![0u32; starts[n_keys as usize] as usize];
    for (row, id) in ids.enumerate() {
        if let Some(id) = id {
            let slot = &mut fill[id as usize];
            order[*slot as usize] = row as u32;
            *slot += 1;
        }
    }
    (starts, order)
}

/// For each entity row, the index of its winning feature row (null when none).
///
/// `entity_keys` and `feature_keys` must have the same types, column by column.
pub fn asof_indices(
    entity_keys: &[ArrayRef],
    entity_ts: &TimestampMicrosecondArray,
    feature_keys: &[ArrayRef],
    feature_ts: &TimestampMicrosecondArray,
    feature_created: Option<&TimestampMicrosecondArray>,
    ttl_micros: Option<i64>,
) -> Result<UInt32Array, ArrowError> {
    let (keys, ids, n_keys) = Keys::build(feature_keys)?;
    // Feature rows grouped by key id; rows with a null key or timestamp are left out.
    let (starts, mut order) = group_by_key(
        n_keys,
        ids.iter().enumerate().map(|(row, id)| (*id != u32::MAX && feature_ts.is_valid(row)).then_some(*id)),
    );
    let ts = feature_ts.values();
    // Each bucket's timestamps side by side (gathered once, in one pass), so that
    // sorting a bucket and binary-searching it read one or two cache lines instead
    // of a row's timestamp per step.
    let mut bucket_ts: Vec<i64> = order.iter().map(|r| ts[*r as usize]).collect();
    let created = |r: u32| feature_created.and_then(|c| c.is_valid(r as usize).then(|| c.value(r as usize)));
    let mut scratch: Vec<(i64, Option<i64>, u32)> = Vec::new();
    for w in starts.windows(2) {
        let (lo, hi) = (w[0] as usize, w[1] as usize);
        let bts = &mut bucket_ts[lo..hi];
        let sorted = bts.windows(2).all(|p| p[0] < p[1]);
        if sorted {
            continue;
        }
        // Rows are in table order within a bucket; a stable sort keeps it for exact ties.
        let rows = &mut order[lo..hi];
        scratch.clear();
        scratch.extend(bts.iter().zip(rows.iter()).map(|(t, r)| (*t, created(*r), *r)));
        scratch.sort_by_key(|(t, c, _)| (*t, *c));
        for ((t, _, r), (bt, row)) in scratch.iter().zip(bts.iter_mut().zip(rows.iter_mut())) {
            (*bt, *row) = (*t, *r);
        }
    }

    // Entity rows grouped by key id (a counting sort), with their timestamps laid
    // out in that order, so that the match is a streaming pass over both sides.
    let entity_ids = keys.lookup(entity_keys)?;
    let ets = entity_ts;
    let n = entity_ids.len();
    let (entity_starts, entity_order) =
        group_by_key(n_keys, entity_ids.iter().enumerate().map(|(i, id)| id.filter(|_| ets.is_valid(i))));
    drop(entity_ids);
    let grouped_ts: Vec<i64> = entity_order.iter().map(|i| ets.value(*i as usize)).collect();
    let m = entity_order.len();
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).min(m / 50_000 + 1).max(1);
    // Key ids split in ranges of about the same number of entity rows, one per thread.
    let mut bounds: Vec<usize> = (1..threads)
        .map(|t| entity_starts.partition_point(|s| (*s as usize) < m * t / threads).min(n_keys as usize))
        .collect();
    bounds.insert(0, 0);
    bounds.push(n_keys as usize);
    // The winner of each entity row in `entity_order`, u32::MAX for none.
    let mut winners = vec![u32::MAX; m];
    std::thread::scope(|scope| {
        let mut rest = winners.as_mut_slice();
        for k in bounds.windows(2) {
            let (k0, k1) = (k[0], k[1]);
            let (p0, p1) = (entity_starts[k0] as usize, entity_starts[k1] as usize);
            let (mine, tail) = std::mem::take(&mut rest).split_at_mut(p1 - p0);
            rest = tail;
            let (order, starts, bucket_ts, entity_starts, grouped_ts) =
                (&order, &starts, &bucket_ts, &entity_starts, &grouped_ts);
            scope.spawn(move || {
                for key in k0..k1 {
                    let (lo, hi) = (starts[key] as usize, starts[key + 1] as usize);
                    let bts = &bucket_ts[lo..hi];
                    for p in entity_starts[key] as usize..entity_starts[key + 1] as usize {
                        let t = grouped_ts[p];
                        let q = bts.partition_point(|ft| *ft <= t);
                        if q == 0 || ttl_micros.is_some_and(|ttl| bts[q - 1] < t.saturating_sub(ttl)) {
                            continue;
                        }
                        mine[p - p0] = order[lo + q - 1];
                    }
                }
            });
        }
    });
    let mut out: Vec<Option<u32>> = vec![None; n];
    for (i, w) in entity_order.iter().zip(&winners) {
        if *w != u32::MAX {
            out[*i as usize] = Some(*w);
        }
    }
    Ok(UInt32Array::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray;
    use std::sync::Arc;

    /// Equal keys fall in the same part whatever their integer width or string
    /// layout; parts are in range and about even.
    #[test]
    fn parts_follow_the_keys_not_their_types() {
        use datafusion::arrow::array::{Int32Array, LargeStringArray, StringViewArray};
        let n = 10_000;
        let wide: ArrayRef = Arc::new(Int64Array::from_iter_values(0..n));
        let narrow: ArrayRef = Arc::new(Int32Array::from_iter_values(0..n as i32));
        let parts = part_of(&[wide], 7).unwrap();
        assert_eq!(parts, part_of(&[narrow], 7).unwrap());
        let mut counts = [0usize; 7];
        parts.iter().for_each(|p| counts[*p as usize] += 1);
        assert!(counts.iter().all(|c| *c > 1_000 && *c < 2_000), "{counts:?}");

        let names = |i: i64| format!("user {i}");
        let plain: ArrayRef = Arc::new(StringArray::from_iter_values((0..n).map(names)));
        let view: ArrayRef = Arc::new(StringViewArray::from_iter_values((0..n).map(names)));
        let large: ArrayRef = Arc::new(LargeStringArray::from_iter_values((0..n).map(names)));
        let two = |k: ArrayRef| part_of(&[k, Arc::new(Int64Array::from_iter_values(0..n)) as ArrayRef], 5).unwrap();
        let parts = two(plain);
        assert_eq!(parts, two(view));
        assert_eq!(parts, two(large));
        assert!(parts.iter().all(|p| *p < 5));
        assert!((0..5).all(|p| parts.contains(&p)));
    }

    /// The ten-line reference: for each entity row, scan every feature row.
    fn naive(
        ek: &[Option<i64>],
        et: &[Option<i64>],
        fk: &[Option<i64>],
        ft: &[Option<i64>],
        fc: &[Option<i64>],
        ttl: Option<i64>,
    ) -> Vec<Option<u32>> {
        (0..ek.len())
            .map(|i| {
                let (Some(k), Some(t)) = (ek[i], et[i]) else { return None };
                let mut best: Option<usize> = None;
                for r in 0..fk.len() {
                    let (Some(fkr), Some(ftr)) = (fk[r], ft[r]) else { continue };
                    let in_window = fkr == k && ftr <= t && ttl.is_none_or(|ttl| ftr >= t - ttl);
                    if in_window && best.is_none_or(|b| (ft[b], fc[b]) <= (ft[r], fc[r])) {
                        best = Some(r);
                    }
                }
                best.map(|b| b as u32)
            })
            .collect()
    }

    /// xorshift, so the property test needs no extra crate and is reproducible.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
        fn opt(&mut self, n: u64, null_one_in: u64) -> Option<i64> {
            (self.next(null_one_in) != 0).then(|| self.next(n) as i64)
        }
    }

    fn ts(v: &[Option<i64>]) -> TimestampMicrosecondArray {
        TimestampMicrosecondArray::from(v.to_vec()).with_timezone("UTC")
    }

    #[test]
    fn matches_the_naive_reference_on_random_data() {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        for case in 0..400 {
            // Small domains force equal keys, equal timestamps, ties on created, TTL edges.
            let (nf, ne) = (rng.next(60) as usize, rng.next(60) as usize + 1);
            let keys = rng.next(6) + 1;
            let span = rng.next(30) + 1;
            let fk: Vec<_> = (0..nf).map(|_| rng.opt(keys, 20)).collect();
            let ft: Vec<_> = (0..nf).map(|_| rng.opt(span, 20)).collect();
            let fc: Vec<_> = (0..nf).map(|_| rng.opt(3, 4)).collect();
            let ek: Vec<_> = (0..ne).map(|_| rng.opt(keys + 1, 20)).collect();
            let et: Vec<_> = (0..ne).map(|_| rng.opt(span + 2, 20)).collect();
            let ttl = match rng.next(3) {
                0 => None,
                _ => Some(rng.next(span + 1) as i64),
            };
            let with_created = case % 2 == 0;
            let fc_used: Vec<Option<i64>> = if with_created { fc.clone() } else { vec![None; nf] };
            let expected = naive(&ek, &et, &fk, &ft, &fc_used, ttl);
            // Through the int64 fast path and through the generic row-format path.
            let as_int: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(fk.clone()))];
            let e_int: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(ek.clone()))];
            let to_str = |v: &[Option<i64>]| -> ArrayRef {
                Arc::new(StringArray::from(v.iter().map(|x| x.map(|k| format!("k{k}"))).collect::<Vec<_>>()))
            };
            let created = ts(&fc);
            for (e, f) in [(e_int, as_int), (vec![to_str(&ek)], vec![to_str(&fk)])] {
                let got = asof_indices(&e, &ts(&et), &f, &ts(&ft), with_created.then_some(&created), ttl).unwrap();
                let got: Vec<Option<u32>> = got.iter().collect();
                assert_eq!(
                    got, expected,
                    "case {case}: ttl {ttl:?}\nfk {fk:?}\nft {ft:?}\nfc {fc_used:?}\nek {ek:?}\net {et:?}"
                );
            }
        }
    }

    #[test]
    fn ttl_bounds_are_inclusive_to_the_microsecond() {
        let hour = 3_600_000_000;
        let k: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(vec![1]))];
        let ek: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(vec![1, 1, 1, 1]))];
        let at = |t: i64| ts(&[Some(t)]);
        let et = ts(&[Some(11 * hour), Some(11 * hour + 1), Some(10 * hour), Some(10 * hour - 1_000_000)]);
        let got = asof_indices(&ek, &et, &k, &at(10 * hour), None, Some(hour)).unwrap();
        assert_eq!(got.iter().collect::<Vec<_>>(), vec![Some(0), None, Some(0), None]);
    }

    #[test]
    fn multi_column_keys() {
        let fk: Vec<ArrayRef> =
            vec![Arc::new(Int64Array::from(vec![1, 1, 2])), Arc::new(StringArray::from(vec!["a", "b", "a"]))];
        let ek: Vec<ArrayRef> =
            vec![Arc::new(Int64Array::from(vec![1, 2, 2])), Arc::new(StringArray::from(vec!["b", "a", "b"]))];
        let got =
            asof_indices(&ek, &ts(&[Some(5), Some(5), Some(5)]), &fk, &ts(&[Some(1), Some(1), Some(1)]), None, None)
                .unwrap();
        assert_eq!(got.iter().collect::<Vec<_>>(), vec![Some(1), Some(2), None]);
    }
}
