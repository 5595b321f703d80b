//! The two hash orders qemu-ga's checks walk in.
//!
//! - QDict iteration order (QEMU qobject/qdict.c, bucket from the wire writer): buckets in
//!   ascending order, newest-inserted key first within a bucket. The top-level member check
//!   of a request walks the object in this order, and so does the argument visitor when it
//!   fills its table of unvisited keys.
//! - GLib's GHashTable iteration order (glib/ghash.c, 2.74 as in Debian 12): the argument
//!   visitor keeps the unvisited keys of each object in a `GHashTable` and reports the first
//!   one left in slot order as "unexpected". Slot order depends on `g_str_hash`, the table
//!   size, the probe sequence, the tombstones the visited keys leave and the resizes their
//!   removal triggers, so all of that is modelled here.
//!
//! `g_str_hash` runs over the bytes of QEMU's C string for the key: UTF-8, except that U+0000
//! is held as the overlong pair C0 80 (QEMU's JSON parser never puts a NUL byte in a string).

use crate::wire::{Object, Value};

/// The bytes QEMU holds for `s` (see the module comment).
fn c_bytes(s: &str) -> impl Iterator<Item = u8> + '_ {
    s.bytes().flat_map(|b| {
        let pair: [u8; 2] = if b == 0 { [0xC0, 0x80] } else { [b, 0] };
        let len = if b == 0 { 2 } else { 1 };
        pair.into_iter().take(len)
    })
}

/// The members of `object` in QDict iteration order, given that they were inserted in the
/// object's order (which is what QEMU's parser does).
pub(crate) fn qdict_order(object: &Object) -> Vec<(&str, &Value)> {
    object.iter_qdict_order().collect()
}

/// GLib's `g_str_hash`: djb2 over the bytes taken as *signed* chars.
fn g_str_hash(key: &str) -> u32 {
    c_bytes(key).fold(5381u32, |h, b| {
        (h << 5)
            .wrapping_add(h)
            .wrapping_add(i32::from(b as i8) as u32)
    })
}

const UNUSED_HASH: u32 = 0;
const TOMBSTONE_HASH: u32 = 1;
const MIN_SHIFT: u32 = 3;

/// `prime_mod[shift]`: the largest prime below `1 << shift`, from glib/ghash.c.
const PRIME_MOD: [u32; 32] = [
    1, 2, 3, 7, 13, 31, 61, 127, 251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071,
    262139, 524287, 1048573, 2097143, 4194301, 8388593, 16777213, 33554393, 67108859, 134217689,
    268435399, 536870909, 1073741789, 2147483647,
];

fn is_real(hash: u32) -> bool {
    hash >= 2
}

/// A model of a GLib `GHashTable` of string keys (created by `g_hash_table_new(g_str_hash,
/// g_str_equal)`) that only tracks where each key sits.
#[derive(Debug)]
pub(crate) struct GHashSet<'a> {
    size: usize,
    modulo: u32,
    mask: u32,
    nnodes: usize,
    noccupied: usize,
    hashes: Vec<u32>,
    keys: Vec<Option<&'a str>>,
}

impl<'a> GHashSet<'a> {
    pub(crate) fn new() -> Self {
        let mut set = GHashSet {
            size: 0,
            modulo: 1,
            mask: 0,
            nnodes: 0,
            noccupied: 0,
            hashes: Vec::new(),
            keys: Vec::new(),
        };
        set.set_shift(MIN_SHIFT);
        set.hashes = vec![UNUSED_HASH; set.size];
        set.keys = vec![None; set.size];
        set
    }

    fn set_shift(&mut self, shift: u32) {
        self.size = 1usize << shift;
        self.modulo = PRIME_MOD[shift as usize];
        self.mask = (self.size - 1) as u32;
    }

    /// `g_hash_table_set_shift_from_size`: the number of significant bits of `size`, at
    /// least `MIN_SHIFT`.
    fn set_shift_from_size(&mut self, size: usize) {
        let shift = (usize::BITS - size.leading_zeros()).clamp(MIN_SHIFT, 31);
        self.set_shift(shift);
    }

    fn hash_to_index(&self, hash: u32) -> usize {
        // glib multiplies by a small prime before the modulo (g_hash_table_hash_to_index).
        (hash.wrapping_mul(11) % self.modulo) as usize
    }

    fn key_hash(key: &str) -> u32 {
        let hash = g_str_hash(key);
        if is_real(hash) {
            hash
        } else {
            2
        }
    }

    /// `g_hash_table_lookup_node`: the slot holding `key`, else the first tombstone on its
    /// probe path, else the empty slot that ends the path.
    fn lookup_node(&self, key: &str, hash: u32) -> usize {
        let mut index = self.hash_to_index(hash);
        let mut first_tombstone = None;
        let mut step = 0u32;
        while self.hashes[index] != UNUSED_HASH {
            let node_hash = self.hashes[index];
            if node_hash == hash {
                if self.keys[index] == Some(key) {
                    return index;
                }
            } else if node_hash == TOMBSTONE_HASH && first_tombstone.is_none() {
                first_tombstone = Some(index);
            }
            step += 1;
            index = ((index as u32).wrapping_add(step) & self.mask) as usize;
        }
        first_tombstone.unwrap_or(index)
    }

    /// `g_hash_table_insert` of a key not yet present (QDict keys are unique).
    pub(crate) fn insert(&mut self, key: &'a str) {
        let hash = Self::key_hash(key);
        let index = self.lookup_node(key, hash);
        let old = self.hashes[index];
        if is_real(old) {
            return;
        }
        self.hashes[index] = hash;
        self.keys[index] = Some(key);
        self.nnodes += 1;
        if old == UNUSED_HASH {
            self.noccupied += 1;
            self.maybe_resize();
        }
    }

    /// `g_hash_table_remove`: leaves a tombstone, then may shrink the table.
    pub(crate) fn remove(&mut self, key: &str) -> bool {
        let hash = Self::key_hash(key);
        let index = self.lookup_node(key, hash);
        if !is_real(self.hashes[index]) {
            return false;
        }
        self.hashes[index] = TOMBSTONE_HASH;
        self.keys[index] = None;
        self.nnodes -= 1;
        self.maybe_resize();
        true
    }

    /// The key `g_hash_table_iter_next` returns first.
    pub(crate) fn first(&self) -> Option<&'a str> {
        self.hashes
            .iter()
            .zip(&self.keys)
            .find(|(h, _)| is_real(**h))
            .and_then(|(_, k)| *k)
    }

    fn maybe_resize(&mut self) {
        let noccupied = self.noccupied;
        let size = self.size;
        if (size > self.nnodes * 4 && size > 1 << MIN_SHIFT) || size <= noccupied + noccupied / 16 {
            self.resize();
        }
    }

    /// `g_hash_table_resize`: the in-place rehash of glib ≥ 2.60, with its eviction chain.
    fn resize(&mut self) {
        let old_size = self.size;
        // glib computes `nnodes * 1.333` as a double and truncates it to an int.
        let target = (self.nnodes as f64 * 1.333) as usize;
        self.set_shift_from_size(target);
        if self.size > old_size {
            self.hashes.resize(self.size, UNUSED_HASH);
            self.keys.resize(self.size, None);
        }
        let mut placed = vec![false; old_size.max(self.size)];
        for i in 0..old_size {
            let node_hash = self.hashes[i];
            if !is_real(node_hash) {
                self.hashes[i] = UNUSED_HASH;
                continue;
            }
            if placed[i] {
                continue;
            }
            self.hashes[i] = UNUSED_HASH;
            let mut key = self.keys[i].take();
            let mut hash = node_hash;
            loop {
                let mut index = self.hash_to_index(hash);
                let mut step = 0u32;
                while placed[index] {
                    step += 1;
                    index = ((index as u32).wrapping_add(step) & self.mask) as usize;
                }
                placed[index] = true;
                let replaced = self.hashes[index];
                self.hashes[index] = hash;
                let evicted = std::mem::replace(&mut self.keys[index], key);
                if !is_real(replaced) {
                    break;
                }
                hash = replaced;
                key = evicted;
            }
        }
        if self.size < old_size {
            self.hashes.truncate(self.size);
            self.keys.truncate(self.size);
        }
        self.noccupied = self.nnodes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn object(keys: &[&str]) -> Object {
        keys.iter()
            .map(|k| ((*k).to_owned(), Value::Null))
            .collect()
    }

    #[rstest]
    #[case::execute("execute", 299)]
    #[case::arguments("arguments", 447)]
    #[case::return_("return", 401)]
    #[case::id("id", 486)]
    #[case::error("error", 489)]
    #[case::class("class", 211)]
    #[case::desc("desc", 377)]
    #[case::aa("aa", 110)]
    #[case::aq("aq", 110)]
    fn tdb_buckets_match_the_measured_ones(#[case] key: &str, #[case] bucket: u32) {
        assert_eq!(crate::wire::qdict_bucket(key), bucket);
    }

    #[rstest]
    #[case::newest_first_in_a_bucket(&["aa", "aq"], &["aq", "aa"])]
    #[case::newest_first_reversed(&["aq", "aa"], &["aa", "aq"])]
    #[case::request(&["arguments", "id", "execute"], &["execute", "arguments", "id"])]
    fn qdict_order_is_bucket_then_newest(#[case] inserted: &[&str], #[case] walked: &[&str]) {
        let obj = object(inserted);
        let keys: Vec<&str> = qdict_order(&obj).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, walked);
    }

    #[test]
    fn g_str_hash_uses_signed_bytes() {
        // djb2 of "a": 5381 * 33 + 97.
        assert_eq!(g_str_hash("a"), 5381 * 33 + 97);
        // 0xC3 as a signed char is -61.
        assert_eq!(
            g_str_hash("\u{e9}"),
            ((5381u32 * 33).wrapping_sub(61)) * 33 - 87
        );
        assert_eq!(g_str_hash(""), 5381);
    }

    #[test]
    fn nul_is_hashed_as_the_overlong_pair() {
        assert_eq!(
            c_bytes("a\0b").collect::<Vec<u8>>(),
            vec![b'a', 0xC0, 0x80, b'b']
        );
        assert_ne!(g_str_hash("a\0"), g_str_hash("a"));
    }

    /// The leftover the argument visitor reports: keys inserted in QDict order, the visited
    /// ones removed in schema order.
    fn leftover<'a>(keys: &'a [&'a str], visited: &[&str]) -> Option<&'a str> {
        let obj = object(keys);
        let order: Vec<&str> = qdict_order(&obj).into_iter().map(|(k, _)| k).collect();
        let mut set = GHashSet::new();
        for k in &order {
            let at = keys.iter().position(|x| x == k).unwrap_or(0);
            set.insert(keys[at]);
        }
        for v in visited {
            set.remove(v);
        }
        set.first()
    }

    #[rstest]
    #[case::measured_bar(&["id", "foo", "bar"], &["id"], Some("bar"))]
    #[case::measured_aa(&["id", "zz", "aa"], &["id"], Some("aa"))]
    #[case::nothing_left(&["id"], &["id"], None)]
    fn leftover_matches_the_real_agent(
        #[case] keys: &[&str],
        #[case] visited: &[&str],
        #[case] expected: Option<&str>,
    ) {
        assert_eq!(leftover(keys, visited), expected);
    }

    #[test]
    fn growing_and_shrinking_keep_every_key_findable() {
        let names: Vec<String> = (0..300).map(|i| format!("key{i}")).collect();
        let mut set = GHashSet::new();
        for n in &names {
            set.insert(n);
        }
        assert_eq!(set.nnodes, 300);
        assert!(set.size >= 300);
        for n in names.iter().take(295) {
            assert!(set.remove(n), "{n} must be found");
        }
        assert_eq!(set.nnodes, 5);
        assert!(set.size <= 32, "the table shrinks, size {}", set.size);
        let first = set.first().map(str::to_owned);
        assert!(first.is_some_and(|k| names[295..].contains(&k)));
        for n in &names[295..] {
            assert!(set.remove(n));
        }
        assert_eq!(set.first(), None);
    }
}
