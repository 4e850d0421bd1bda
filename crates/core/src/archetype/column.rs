//! A column: the values of one stored field for every row of an archetype.
//!
//! Fixed-size fields live in one contiguous buffer backed by `u64` words, so a
//! column can be viewed as `&[T]` for any plain type `T` with alignment <= 8
//! (checked by `bytemuck`, never assumed). Variable-length fields keep one
//! boxed byte string per row.

/// Values of one field across the rows of an archetype.
#[derive(Debug, Clone)]
pub enum Column {
    Fixed(FixedColumn),
    Var(VarColumn),
}

/// Out-of-line values, with their total size kept for memory accounting.
#[derive(Debug, Clone, Default)]
pub struct VarColumn {
    items: Vec<Box<[u8]>>,
    bytes: usize,
}

impl VarColumn {
    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    pub fn get(&self, row: usize) -> &[u8] {
        &self.items[row]
    }
    fn push(&mut self, b: &[u8]) {
        self.bytes += b.len();
        self.items.push(b.into());
    }
    fn set(&mut self, row: usize, b: &[u8]) {
        self.bytes = self.bytes + b.len() - self.items[row].len();
        self.items[row] = b.into();
    }
    fn swap_remove(&mut self, row: usize) {
        self.bytes -= self.items[row].len();
        self.items.swap_remove(row);
    }
    /// Keep the first `rows` values.
    pub fn truncate(&mut self, rows: usize) {
        for b in self.items.drain(rows.min(self.items.len())..) {
            self.bytes -= b.len();
        }
    }
}

/// A dense buffer of fixed-size elements.
#[derive(Debug, Clone)]
pub struct FixedColumn {
    words: Vec<u64>,
    size: usize,
    len: usize,
}

impl FixedColumn {
    pub fn new(size: usize) -> FixedColumn {
        debug_assert!(size > 0);
        FixedColumn { words: Vec::new(), size, len: 0 }
    }

    /// Element size in bytes.
    pub fn elem_size(&self) -> usize {
        self.size
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn ensure(&mut self, rows: usize) {
        let words = (rows * self.size).div_ceil(8);
        if self.words.len() < words {
            self.grow(words);
        }
    }

    /// Grow the zero-initialised part geometrically, so appending one row
    /// at a time costs one comparison and a copy.
    #[cold]
    fn grow(&mut self, words: usize) {
        let target = words.max(self.words.len() * 2).max(8);
        self.words.resize(target, 0);
    }

    /// All elements' bytes.
    pub fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice::<u64, u8>(&self.words)[..self.len * self.size]
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        let n = self.len * self.size;
        &mut bytemuck::cast_slice_mut::<u64, u8>(&mut self.words)[..n]
    }

    pub fn get(&self, row: usize) -> &[u8] {
        &self.bytes()[row * self.size..(row + 1) * self.size]
    }

    pub fn get_mut(&mut self, row: usize) -> &mut [u8] {
        let s = self.size;
        &mut self.bytes_mut()[row * s..(row + 1) * s]
    }

    #[inline]
    pub fn push(&mut self, b: &[u8]) {
        debug_assert_eq!(b.len(), self.size);
        let start = self.len * self.size;
        self.ensure(self.len + 1);
        bytemuck::cast_slice_mut::<u64, u8>(&mut self.words)[start..start + self.size].copy_from_slice(b);
        self.len += 1;
    }

    /// Remove `row`, moving the last element into its place.
    pub fn swap_remove(&mut self, row: usize) {
        let last = self.len - 1;
        if row != last {
            let s = self.size;
            self.bytes_mut().copy_within(last * s..(last + 1) * s, row * s);
        }
        self.len -= 1;
        // Keep the buffer from holding far more than it needs.
        let need = (self.len * self.size).div_ceil(8);
        if self.words.len() > 64 && need < self.words.len() / 4 {
            self.words.truncate(need.max(8));
            self.words.shrink_to_fit();
        }
    }

    /// Append many elements at once (`b` holds whole elements).
    pub fn extend(&mut self, b: &[u8]) {
        debug_assert_eq!(b.len() % self.size, 0);
        let rows = b.len() / self.size;
        self.ensure(self.len + rows);
        let start = self.len * self.size;
        self.len += rows;
        self.bytes_mut()[start..].copy_from_slice(b);
    }

    /// Append one zeroed element and return it for the caller to fill.
    pub fn push_zeroed(&mut self) -> &mut [u8] {
        self.ensure(self.len + 1);
        self.len += 1;
        let row = self.len - 1;
        self.get_mut(row)
    }

    /// Keep the first `rows` elements.
    pub fn truncate(&mut self, rows: usize) {
        if rows < self.len {
            let end = rows * self.size;
            let old = self.len * self.size;
            self.bytes_mut_upto(old)[end..].fill(0);
            self.len = rows;
        }
    }

    fn bytes_mut_upto(&mut self, n: usize) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut::<u64, u8>(&mut self.words)[..n]
    }

    /// Reserve room for `extra` more rows.
    pub fn reserve(&mut self, extra: usize) {
        let words = ((self.len + extra) * self.size).div_ceil(8);
        self.words.reserve(words.saturating_sub(self.words.len()));
    }

    /// Bytes held (capacity), for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.words.capacity() * 8
    }
}

impl Column {
    pub fn new(fixed_size: Option<usize>) -> Column {
        match fixed_size {
            Some(s) => Column::Fixed(FixedColumn::new(s)),
            None => Column::Var(VarColumn::default()),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Column::Fixed(c) => c.len(),
            Column::Var(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, row: usize) -> &[u8] {
        match self {
            Column::Fixed(c) => c.get(row),
            Column::Var(v) => v.get(row),
        }
    }

    /// Append a value's bytes.
    pub fn push(&mut self, b: &[u8]) {
        match self {
            Column::Fixed(c) => c.push(b),
            Column::Var(v) => v.push(b),
        }
    }

    /// Append whole fixed-size elements (bulk load).
    pub fn extend_fixed(&mut self, b: &[u8]) {
        if let Column::Fixed(c) = self {
            c.extend(b);
        }
    }

    /// Overwrite a row's value.
    pub fn set(&mut self, row: usize, b: &[u8]) {
        match self {
            Column::Fixed(c) => c.get_mut(row).copy_from_slice(b),
            Column::Var(v) => v.set(row, b),
        }
    }

    /// Keep the first `rows` values.
    pub fn truncate(&mut self, rows: usize) {
        match self {
            Column::Fixed(c) => c.truncate(rows),
            Column::Var(v) => v.truncate(rows),
        }
    }

    /// Append every value of `other` (same kind and size).
    pub fn append(&mut self, other: &Column) {
        match (self, other) {
            (Column::Fixed(a), Column::Fixed(b)) => a.extend(b.bytes()),
            (a, b) => {
                for i in 0..b.len() {
                    a.push(b.get(i));
                }
            }
        }
    }

    pub fn swap_remove(&mut self, row: usize) {
        match self {
            Column::Fixed(c) => c.swap_remove(row),
            Column::Var(v) => v.swap_remove(row),
        }
    }

    pub fn reserve(&mut self, extra: usize) {
        match self {
            Column::Fixed(c) => c.reserve(extra),
            Column::Var(v) => v.items.reserve(extra),
        }
    }

    /// Bytes of live data (not capacity): the basis of memory accounting.
    pub fn data_bytes(&self) -> usize {
        match self {
            Column::Fixed(c) => c.len() * c.elem_size(),
            Column::Var(v) => v.bytes + v.items.len() * 16,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_get_swap_remove() {
        let mut c = Column::new(Some(3));
        c.push(&[1, 2, 3]);
        c.push(&[4, 5, 6]);
        c.push(&[7, 8, 9]);
        assert_eq!(c.get(1), &[4, 5, 6]);
        c.swap_remove(0);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(0), &[7, 8, 9]);
        c.set(1, &[0, 0, 1]);
        assert_eq!(c.get(1), &[0, 0, 1]);
        c.swap_remove(1);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn typed_view_is_aligned() {
        let mut c = FixedColumn::new(12);
        for i in 0..5u8 {
            let v: [f32; 3] = [f32::from(i), 1.0, 2.0];
            c.push(bytemuck::bytes_of(&v));
        }
        let view: &[[f32; 3]] = bytemuck::try_cast_slice(c.bytes()).unwrap();
        assert_eq!(view.len(), 5);
        assert_eq!(view[4].map(f32::to_bits), [4.0f32, 1.0, 2.0].map(f32::to_bits));
    }

    #[test]
    fn var_column() {
        let mut c = Column::new(None);
        c.push(b"hello");
        c.push(b"");
        assert_eq!(c.get(0), b"hello");
        assert_eq!(c.get(1), b"");
        assert_eq!(c.data_bytes(), 5 + 32);
    }
}
