//! Batches cut into chunks of a few fixed sizes. A multi-row statement's text depends on its
//! row count, and the drivers cache prepared statements by their text: with chunks of any size,
//! every batch parsed (and prepared) its statements afresh, which profiled on SQLite as more
//! work than running them. With a fixed ladder of sizes, the same few texts come back.

/// `items` cut into consecutive chunks whose lengths are all in `sizes` (largest first, ending
/// in 1), each as large as what is left allows.
pub fn fixed_chunks<'a, T>(
    items: &'a [T],
    sizes: &'static [usize],
) -> impl Iterator<Item = &'a [T]> + 'a {
    let mut rest = items;
    std::iter::from_fn(move || {
        let size = sizes.iter().copied().find(|&size| size <= rest.len())?;
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        Some(chunk)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZES: [usize; 5] = [256, 64, 16, 4, 1];

    fn lengths(n: usize) -> Vec<usize> {
        let items: Vec<usize> = (0..n).collect();
        let chunks: Vec<&[usize]> = fixed_chunks(&items, &SIZES).collect();
        assert_eq!(chunks.concat(), items, "every item once, in order");
        chunks.iter().map(|c| c.len()).collect()
    }

    #[test]
    fn batches_are_cut_into_the_fixed_sizes() {
        assert_eq!(lengths(0), Vec::<usize>::new());
        assert_eq!(lengths(1), [1]);
        assert_eq!(lengths(23), [16, 4, 1, 1, 1]);
        assert_eq!(lengths(600), [256, 256, 64, 16, 4, 4]);
        assert!(
            (0..3_000).all(|n| lengths(n).iter().all(|len| SIZES.contains(len))),
            "no other size"
        );
    }
}
