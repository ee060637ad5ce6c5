//! The pages of a memslot written since its last harvest (page offsets into the slot), for the
//! I5 check: a bitmap grown on demand, one bit per page instead of a tree node per page.

/// A set of page offsets, iterated in ascending order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct WrittenPages {
    words: Vec<u64>,
}

impl WrittenPages {
    /// Add page `offset`.
    pub fn insert(&mut self, offset: u64) {
        let w = (offset / 64) as usize;
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        self.words[w] |= 1 << (offset % 64);
    }

    /// Every page offset in the set, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &bits)| {
            let mut bits = bits;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let b = bits.trailing_zeros() as u64;
                bits &= bits - 1;
                Some(w as u64 * 64 + b)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::WrittenPages;

    #[test]
    fn iterates_what_was_inserted_in_order_once() {
        let mut s = WrittenPages::default();
        for o in [700, 3, 64, 3, 0, 63, 1 << 20] {
            s.insert(o);
        }
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 3, 63, 64, 700, 1 << 20]);
        assert_eq!(WrittenPages::default().iter().count(), 0);
    }
}
