//! Port ranges as the LPM key can hold them.

/// The fewest aligned blocks `(base, prefix_len)` that cover exactly
/// `start..=end`: a block of prefix length `l` is the 2^(16-l) ports
/// sharing the top `l` bits of `base`. Empty when `start > end`.
pub fn port_blocks(start: u16, end: u16) -> Vec<(u16, u8)> {
    let mut out = Vec::new();
    let end = u32::from(end);
    let mut cur = u32::from(start);
    while cur <= end {
        // Largest power of two that `cur` is aligned to (all 2^16 for 0) …
        let mut size: u32 = if cur == 0 {
            1 << 16
        } else {
            cur & cur.wrapping_neg()
        };
        // … shrunk until the block ends inside the range.
        while cur + size - 1 > end {
            size >>= 1;
        }
        // cur <= end <= 65535 and size <= 2^16, so both narrow losslessly.
        out.push((cur as u16, (16 - size.trailing_zeros()) as u8));
        cur += size;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::port_blocks;

    /// Expands blocks back into ports, to compare with the range.
    fn ports(blocks: &[(u16, u8)]) -> Vec<u32> {
        blocks
            .iter()
            .flat_map(|&(base, len)| {
                let size = 1u32 << (16 - u32::from(len));
                (u32::from(base)..u32::from(base) + size).collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn examples() {
        assert_eq!(port_blocks(80, 80), [(80, 16)]);
        assert_eq!(port_blocks(80, 81), [(80, 15)]);
        assert_eq!(port_blocks(81, 82), [(81, 16), (82, 16)]);
        assert_eq!(port_blocks(0, 65535), [(0, 0)]);
        assert_eq!(port_blocks(32768, 65535), [(32768, 1)]);
        assert!(port_blocks(2, 1).is_empty());
        let all = port_blocks(1, 65535);
        assert_eq!(all.len(), 16);
        assert_eq!(all[0], (1, 16));
        assert_eq!(all[15], (32768, 1));
    }

    #[test]
    fn blocks_cover_exactly_the_range_and_are_aligned() {
        for (s, e) in [
            (1, 1),
            (3, 17),
            (1000, 2000),
            (65535, 65535),
            (1, 65535),
            (0, 5),
        ] {
            let blocks = port_blocks(s, e);
            assert_eq!(
                ports(&blocks),
                (u32::from(s)..=u32::from(e)).collect::<Vec<_>>()
            );
            for (base, len) in blocks {
                let size = 1u32 << (16 - u32::from(len));
                assert_eq!(u32::from(base) % size, 0, "{base}/{len} unaligned");
            }
        }
    }
}
