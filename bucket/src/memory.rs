//! [`MemoryObjects`]: a bounded in-memory home for the results of synchronous requests in the
//! local bucket.
//!
//! A sync client follows its signed URL within milliseconds and then never again, so a result
//! written to disk for it is a file created, read once and deleted later: file-system churn all
//! day for nothing a crash could not lose anyway (the client's open connection is the request's
//! durability). Kept here instead, it costs one copy into memory.
//!
//! An object is kept for a fixed lifetime after it is stored. Until it has been read it is never
//! dropped before (the bound is enforced by refusing new objects, which then go to disk), so a
//! job whose result was accepted here is COMPLETED with a readable result, for at least that
//! lifetime. Once read, it has served the request it was made for: when a new result needs its
//! room, the objects read longest ago are dropped first, so that under a sustained load the
//! memory keeps taking new results instead of filling up with delivered ones for a lifetime and
//! sending every result after that to disk. A second read of a delivered result still works
//! for the lifetime unless its room went to a newer result (its URL then answers 404, as after
//! the lifetime).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use uws::results::ObjectMeta;

/// Objects held in memory, at most `max_bytes` of them, each for `lifetime`.
#[derive(Debug)]
pub struct MemoryObjects {
    max_bytes: u64,
    lifetime: Duration,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    objects: HashMap<String, HeldObject>,
    /// Keys in the order they were stored, which is also the order they expire in (one
    /// lifetime for all).
    order: VecDeque<(Instant, String)>,
    /// Keys of objects that have been read, in the order of their first read, each with its
    /// object's expiry (which tells a later object stored under the same key from it).
    read: VecDeque<(Instant, String)>,
    bytes: u64,
}

#[derive(Debug)]
struct HeldObject {
    bytes: Bytes,
    meta: ObjectMeta,
    expires: Instant,
    /// Whether it has been read (and so may make room for a newer object).
    read: bool,
}

impl MemoryObjects {
    pub fn new(max_bytes: u64, lifetime: Duration) -> MemoryObjects {
        MemoryObjects {
            max_bytes,
            lifetime,
            held: Mutex::default(),
        }
    }

    /// Whether an object of `size` bytes could be held at all (so it is worth reading).
    pub fn could_hold(&self, size: u64) -> bool {
        size <= self.max_bytes
    }

    /// The bound: the most bytes held at once, and so the largest object that could be.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Keeps the object for the lifetime if it fits under the bound once expired objects are
    /// dropped; when it does not, nothing is kept and the bytes come back.
    pub fn insert(&self, key: &str, bytes: Bytes, meta: ObjectMeta) -> Result<(), Bytes> {
        let size = bytes.len() as u64;
        let Ok(mut held) = self.held.lock() else {
            return Err(bytes);
        };
        let now = Instant::now();
        held.expire(now);
        // (`max_bytes - size` cannot underflow: a larger object is refused first.)
        if size > self.max_bytes
            || (self.max_bytes - size < held.bytes && !held.make_room(self.max_bytes - size))
        {
            return Err(bytes);
        }
        let expires = now + self.lifetime;
        held.remove(key);
        held.bytes += size;
        held.order.push_back((expires, key.to_owned()));
        held.objects.insert(
            key.to_owned(),
            HeldObject {
                bytes,
                meta,
                expires,
                read: false,
            },
        );
        metrics::gauge!("skycut_memory_results_bytes").set(held.bytes as f64);
        Ok(())
    }

    /// The object and its metadata, unless it was never here, is deleted or has expired. The
    /// object counts as read from now on.
    pub fn get(&self, key: &str) -> Option<(Bytes, ObjectMeta)> {
        let mut held = self.held.lock().ok()?;
        let object = held.objects.get_mut(key)?;
        if object.expires <= Instant::now() {
            return None;
        }
        let found = (object.bytes.clone(), object.meta.clone());
        if !object.read {
            object.read = true;
            let expires = object.expires;
            held.read.push_back((expires, key.to_owned()));
        }
        Some(found)
    }

    /// Drops the object; true when it was held.
    pub fn remove(&self, key: &str) -> bool {
        self.held.lock().is_ok_and(|mut held| held.remove(key))
    }

    /// Bytes held now (expired objects included until the next insert drops them).
    pub fn bytes(&self) -> u64 {
        self.held.lock().map_or(0, |held| held.bytes)
    }
}

impl Held {
    fn remove(&mut self, key: &str) -> bool {
        match self.objects.remove(key) {
            Some(object) => {
                self.bytes -= object.bytes.len() as u64;
                true
            }
            None => false,
        }
    }

    /// Drops objects that have been read, the first read first, until at most `bytes` are
    /// held; false when the objects not yet read alone hold more.
    fn make_room(&mut self, bytes: u64) -> bool {
        while self.bytes > bytes {
            let Some((expires, key)) = self.read.pop_front() else {
                return false;
            };
            if self
                .objects
                .get(&key)
                .is_some_and(|o| o.read && o.expires == expires)
            {
                self.remove(&key);
            }
        }
        true
    }

    /// Drops every object whose lifetime is over (the oldest first, so it stops at the first
    /// one still alive). A key stored again since its entry in `order` was made keeps its newer
    /// object.
    fn expire(&mut self, now: Instant) {
        // Entries of `read` whose objects are gone by now: read order is not expiry order, so
        // some linger behind a live one, until it expires too.
        while self
            .read
            .front()
            .is_some_and(|(expires, _)| *expires <= now)
        {
            self.read.pop_front();
        }
        while let Some((expires, _)) = self.order.front()
            && *expires <= now
        {
            let Some((expires, key)) = self.order.pop_front() else {
                break;
            };
            if self.objects.get(&key).is_some_and(|o| o.expires == expires) {
                self.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> ObjectMeta {
        ObjectMeta {
            content_type: "application/fits".into(),
            filename: "x.fits".into(),
        }
    }

    #[test]
    fn unread_objects_over_the_bound_are_refused_not_evicted() {
        let memory = MemoryObjects::new(10, Duration::from_secs(60));
        assert!(
            memory
                .insert("a", Bytes::from_static(b"123456"), meta())
                .is_ok()
        );
        let refused = memory.insert("b", Bytes::from_static(b"123457"), meta());
        assert_eq!(refused, Err(Bytes::from_static(b"123457")), "b comes back");
        assert!(memory.get("b").is_none());
        assert_eq!(memory.get("a").map(|(b, _)| b.len()), Some(6), "a stays");
        assert!(memory.remove("a"));
        assert_eq!(memory.bytes(), 0);
        assert!(
            memory
                .insert("b", Bytes::from_static(b"123456"), meta())
                .is_ok()
        );
    }

    #[test]
    fn objects_already_read_make_room_for_new_ones_the_first_read_first() {
        let memory = MemoryObjects::new(10, Duration::from_secs(60));
        let six = Bytes::from_static(b"123456");
        let four = Bytes::from_static(b"1234");
        assert!(memory.insert("a", four.clone(), meta()).is_ok());
        assert!(memory.insert("b", six.clone(), meta()).is_ok());
        // Full, and nothing read yet: refused, and both stay.
        assert!(memory.insert("c", four.clone(), meta()).is_err());
        assert!(memory.get("b").is_some(), "b is read");
        assert!(memory.get("a").is_some(), "then a");
        // c needs four bytes: b, read first, goes; a stays.
        assert!(memory.insert("c", four.clone(), meta()).is_ok());
        assert!(memory.get("b").is_none());
        assert!(memory.get("a").is_some());
        assert_eq!(memory.bytes(), 8);
        // Read twice, an object is dropped once; a key stored again is a new, unread object.
        assert!(memory.get("a").is_some());
        assert!(memory.insert("a", four.clone(), meta()).is_ok());
        assert!(
            memory
                .insert("d", Bytes::from_static(b"12"), meta())
                .is_ok()
        );
        assert_eq!(memory.bytes(), 10);
        // Left: a (stored again, unread), c and d (unread). Once c is read, e takes its room.
        assert!(memory.insert("e", four.clone(), meta()).is_err());
        assert!(memory.get("c").is_some());
        assert!(memory.insert("e", four.clone(), meta()).is_ok());
        assert!(memory.get("c").is_none());
        assert_eq!(memory.bytes(), 10);
        // Only unread objects now: refused, whatever was read before.
        assert!(
            memory
                .insert("f", Bytes::from_static(b"1"), meta())
                .is_err()
        );
        // Larger than the bound: refused without dropping anything.
        assert!(memory.get("e").is_some());
        assert!(
            memory
                .insert("g", Bytes::from(vec![0; 11]), meta())
                .is_err()
        );
        assert!(memory.get("e").is_some());
    }

    #[test]
    fn an_object_of_exactly_the_bound_fits_an_empty_memory() {
        let memory = MemoryObjects::new(6, Duration::from_secs(60));
        assert_eq!(memory.max_bytes(), 6);
        assert!(
            memory
                .insert("a", Bytes::from_static(b"123456"), meta())
                .is_ok()
        );
        assert!(
            memory
                .insert("b", Bytes::from_static(b"1"), meta())
                .is_err()
        );
    }

    #[test]
    fn an_object_stored_again_and_read_again_waits_for_its_new_turn() {
        let memory = MemoryObjects::new(12, Duration::from_secs(60));
        let four = Bytes::from_static(b"1234");
        assert!(memory.insert("a", four.clone(), meta()).is_ok());
        assert!(memory.get("a").is_some());
        assert!(memory.insert("b", four.clone(), meta()).is_ok());
        assert!(memory.get("b").is_some());
        // a again, with room to spare: a new object, read after b was.
        assert!(memory.insert("a", four.clone(), meta()).is_ok());
        assert!(memory.get("a").is_some());
        assert!(memory.insert("c", Bytes::from(vec![0; 8]), meta()).is_ok());
        assert!(memory.get("b").is_none(), "b was read first");
        assert!(
            memory.get("a").is_some(),
            "a's first read was of an object gone"
        );
    }

    #[test]
    fn objects_expire_after_their_lifetime_and_free_their_room() {
        let memory = MemoryObjects::new(10, Duration::from_millis(20));
        assert!(
            memory
                .insert("a", Bytes::from_static(b"123456"), meta())
                .is_ok()
        );
        std::thread::sleep(Duration::from_millis(30));
        assert!(memory.get("a").is_none(), "expired");
        assert!(
            memory
                .insert("b", Bytes::from_static(b"123456"), meta())
                .is_ok()
        );
        assert_eq!(memory.bytes(), 6, "a was dropped to make room");
    }
}
