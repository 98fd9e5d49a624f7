//! The out-of-order store: a fixed arena (allocated once) indexed by offset from
//! `rcv_nxt`, plus a bounded, sorted list of the byte ranges it holds. Segments beyond
//! `rcv_nxt` are copied in, overlaps merged; when the gap at the front fills, the
//! contiguous prefix is handed out (as up to two slices of the arena, zero copy) and
//! freed. Never allocates after construction.

/// Why an insert was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReorderDrop {
    /// Data lies (entirely) beyond the arena's capacity.
    NoSpace,
    /// Would need more disjoint ranges than configured.
    TooManyRanges,
}

pub struct ReorderBuffer {
    arena: Box<[u8]>,
    /// Arena index of offset 0 (= `rcv_nxt`).
    base: usize,
    /// Disjoint, non-adjacent, sorted `[start, end)` offsets from `rcv_nxt`.
    ranges: Vec<(u32, u32)>,
    max_ranges: usize,
    /// Offset of the most recently stored segment (for the first SACK block).
    last: Option<u32>,
}

impl ReorderBuffer {
    pub fn new(capacity_bytes: usize, max_ranges: usize) -> Self {
        let capacity_bytes = capacity_bytes.clamp(1, u32::MAX as usize / 2);
        ReorderBuffer {
            arena: vec![0u8; capacity_bytes].into_boxed_slice(),
            base: 0,
            ranges: Vec::with_capacity(max_ranges.max(1)),
            max_ranges: max_ranges.max(1),
            last: None,
        }
    }
    pub fn capacity(&self) -> usize {
        self.arena.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
    /// Number of disjoint ranges held.
    pub fn ranges(&self) -> &[(u32, u32)] {
        &self.ranges
    }
    pub fn buffered_bytes(&self) -> usize {
        self.ranges.iter().map(|&(s, e)| (e - s) as usize).sum()
    }
    /// Reset (e.g. for a new connection).
    pub fn clear(&mut self) {
        self.ranges.clear();
        self.base = 0;
        self.last = None;
    }

    /// The range holding the most recently stored segment first, then the others in
    /// sequence order (RFC 2018 block order), as offsets from `rcv_nxt`.
    pub fn sack_order<F: FnMut(u32, u32) -> bool>(&self, mut f: F) {
        let recent = self
            .last
            .and_then(|l| self.ranges.iter().position(|&(s, e)| s <= l && l < e));
        if let Some(i) = recent {
            let (s, e) = self.ranges[i];
            if !f(s, e) {
                return;
            }
        }
        for (i, &(s, e)) in self.ranges.iter().enumerate() {
            if Some(i) != recent && !f(s, e) {
                return;
            }
        }
    }

    /// Store `data` at `offset` bytes after `rcv_nxt`. Data past the arena is trimmed.
    /// Returns the number of bytes newly covered.
    pub fn insert(&mut self, offset: usize, data: &[u8]) -> Result<usize, ReorderDrop> {
        let cap = self.arena.len();
        if offset >= cap || data.is_empty() {
            return Err(ReorderDrop::NoSpace);
        }
        let end = (offset + data.len()).min(cap);
        let data = &data[..end - offset];
        let (s, e) = (offset as u32, end as u32);
        // Ranges touching [s, e] (overlapping or adjacent) merge into one.
        let first = self
            .ranges
            .iter()
            .position(|&(_, re)| re >= s)
            .unwrap_or(self.ranges.len());
        let mut last = first;
        while last < self.ranges.len() && self.ranges[last].0 <= e {
            last += 1;
        }
        let merging = last - first;
        if merging == 0 && self.ranges.len() >= self.max_ranges {
            return Err(ReorderDrop::TooManyRanges);
        }
        let before = self.buffered_bytes();
        // Copy into the arena (wrapping).
        let pos = (self.base + offset) % cap;
        let n1 = data.len().min(cap - pos);
        self.arena[pos..pos + n1].copy_from_slice(&data[..n1]);
        if n1 < data.len() {
            self.arena[..data.len() - n1].copy_from_slice(&data[n1..]);
        }
        let mut ns = s;
        let mut ne = e;
        if merging > 0 {
            ns = ns.min(self.ranges[first].0);
            ne = ne.max(self.ranges[last - 1].1);
            self.ranges.drain(first + 1..last);
            self.ranges[first] = (ns, ne);
        } else {
            // Capacity reserved up front: this never reallocates.
            self.ranges.insert(first, (ns, ne));
        }
        self.last = Some(s);
        Ok(self.buffered_bytes() - before)
    }

    /// `rcv_nxt` advanced by `n` bytes that did not come from here.
    pub fn advance(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        let cap = self.arena.len();
        self.base = (self.base + n % cap) % cap;
        if self.ranges.is_empty() {
            self.last = None;
            return;
        }
        let n = n.min(u32::MAX as usize) as u32;
        self.last = self.last.and_then(|l| l.checked_sub(n));
        self.ranges.retain_mut(|r| {
            r.0 = r.0.saturating_sub(n);
            r.1 = r.1.saturating_sub(n);
            r.1 > 0
        });
    }

    /// If data starts at offset 0, hand it to `f` (one or two slices), free it and
    /// return its length (the caller advances `rcv_nxt` by it).
    pub fn pop_front<F: FnMut(&[u8])>(&mut self, mut f: F) -> usize {
        match self.ranges.first() {
            Some(&(0, e)) => {
                let len = e as usize;
                let cap = self.arena.len();
                let n1 = len.min(cap - self.base);
                f(&self.arena[self.base..self.base + n1]);
                if n1 < len {
                    f(&self.arena[..len - n1]);
                }
                self.ranges.remove(0);
                self.advance(len);
                len
            }
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(r: &mut ReorderBuffer) -> Vec<u8> {
        let mut v = Vec::new();
        r.pop_front(|s| v.extend_from_slice(s));
        v
    }

    #[test]
    fn stitch_and_overlap() {
        let mut r = ReorderBuffer::new(16, 4);
        assert_eq!(r.insert(4, b"efgh"), Ok(4));
        assert_eq!(r.insert(10, b"kl"), Ok(2));
        assert_eq!(r.insert(6, b"ghij"), Ok(2)); // overlaps + adjacent: merges all
        assert_eq!(r.ranges(), &[(4, 12)]);
        assert!(collect(&mut r).is_empty());
        r.advance(4); // "abcd" arrived in order
        assert_eq!(collect(&mut r), b"efghijkl");
        assert!(r.is_empty());
    }

    #[test]
    fn wraps_arena_and_bounds() {
        let mut r = ReorderBuffer::new(8, 2);
        r.advance(6);
        assert_eq!(r.insert(1, b"xyzw"), Ok(4)); // wraps around the arena end
        assert_eq!(r.insert(6, b"0123"), Ok(2)); // trimmed to capacity
        assert_eq!(r.insert(20, b"zz"), Err(ReorderDrop::NoSpace));
        assert_eq!(r.ranges().len(), 2);
        r.advance(1);
        let v = collect(&mut r);
        assert_eq!(v, b"xyzw");
        assert_eq!(r.ranges(), &[(1, 3)]);
        assert_eq!(r.insert(4, b"q"), Ok(1));
        assert_eq!(r.insert(6, b"q"), Err(ReorderDrop::TooManyRanges));
    }
}
