//! Resilient hash balancing: a fixed table of buckets mapped to links, and the kernel's jhash
//! so `explain` can name the bucket a source falls into.
//!
//! The table is laid out over every member of the tier, live or not, in proportion to the
//! weights; the buckets of members that are not live are then dealt to the live ones by
//! weight. So when a link leaves, only its own sources move, and when it returns exactly
//! those move back: the buckets of healthy links never change owner. (A `jhash mod N` over
//! the live links would reshuffle almost everyone.)

use std::net::IpAddr;

/// Buckets in the table: divisible by 2..6, 8, 10, 12, 15 and 16, so common weights split
/// it exactly.
pub const BUCKETS: u32 = 240;

/// The jhash seed: fixed, so a reload, a reboot or another router computes the same buckets
/// (nft picks a random seed per load when none is given).
pub const SEED: u32 = 0x636d_6c62;

/// Which link owns each bucket (index = bucket).
///
/// `members` are `(link, weight, live)` of one metric tier in config order; the result names
/// only live links, or is empty when none is live.
pub fn table(members: &[(usize, u32, bool)]) -> Vec<usize> {
    let live: Vec<(usize, u32)> = members
        .iter()
        .filter(|m| m.2)
        .map(|&(link, weight, _)| (link, weight))
        .collect();
    if live.is_empty() {
        return Vec::new();
    }
    let all: Vec<(usize, u32)> = members
        .iter()
        .map(|&(link, weight, _)| (link, weight))
        .collect();
    let mut base = Dealer::new(&all);
    let mut dealer = Dealer::new(&live);
    (0..BUCKETS)
        .map(|_| {
            let link = base.next();
            if live.iter().any(|&(l, _)| l == link) {
                link
            } else {
                dealer.next()
            }
        })
        .collect()
}

/// Smooth weighted round-robin: deals buckets to links by weight, evenly interleaved.
struct Dealer {
    links: Vec<(usize, i64, i64)>,
    total: i64,
}

impl Dealer {
    fn new(live: &[(usize, u32)]) -> Dealer {
        Dealer {
            links: live
                .iter()
                .map(|&(link, weight)| (link, i64::from(weight), 0))
                .collect(),
            total: live.iter().map(|l| i64::from(l.1)).sum(),
        }
    }

    fn next(&mut self) -> usize {
        for entry in &mut self.links {
            entry.2 += entry.1;
        }
        let best = (0..self.links.len())
            .max_by_key(|&i| (self.links[i].2, std::cmp::Reverse(i)))
            .unwrap_or(0);
        self.links[best].2 -= self.total;
        self.links[best].0
    }
}

/// `(first, last, link)` runs of consecutive buckets with the same owner: the vmap entries.
pub fn ranges(table: &[usize]) -> Vec<(u32, u32, usize)> {
    let mut out: Vec<(u32, u32, usize)> = Vec::new();
    for (bucket, &link) in (0u32..).zip(table) {
        match out.last_mut() {
            Some(last) if last.2 == link && last.1 + 1 == bucket => last.1 = bucket,
            _ => out.push((bucket, bucket, link)),
        }
    }
    out
}

/// The bucket nft's `jhash <key> mod BUCKETS seed SEED` gives: the key is the source address
/// (and the destination, same family) in network byte order, as the registers hold it.
pub fn bucket(src: IpAddr, dst: Option<IpAddr>) -> u32 {
    let mut key = octets(src);
    if let Some(dst) = dst {
        key.extend(octets(dst));
    }
    let h = jhash(&key, SEED);
    ((u64::from(h) * u64::from(BUCKETS)) >> 32) as u32
}

fn octets(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The kernel's `jhash()` (Bob Jenkins' lookup3 as include/linux/jhash.h has it). Whole
/// 12-byte blocks are read in the CPU's byte order, as the kernel does, so this matches the
/// kernel it runs beside.
pub fn jhash(key: &[u8], seed: u32) -> u32 {
    let mut a = 0xdead_beef_u32
        .wrapping_add(key.len() as u32)
        .wrapping_add(seed);
    let (mut b, mut c) = (a, a);
    let mut k = key;
    while k.len() > 12 {
        let word = |i: usize| u32::from_ne_bytes([k[i], k[i + 1], k[i + 2], k[i + 3]]);
        a = a.wrapping_add(word(0));
        b = b.wrapping_add(word(4));
        c = c.wrapping_add(word(8));
        mix(&mut a, &mut b, &mut c);
        k = &k[12..];
    }
    if k.is_empty() {
        return c;
    }
    let mut tail = [0u8; 12];
    tail[..k.len()].copy_from_slice(k);
    let le = |i: usize| u32::from_le_bytes([tail[i], tail[i + 1], tail[i + 2], tail[i + 3]]);
    a = a.wrapping_add(le(0));
    b = b.wrapping_add(le(4));
    c = c.wrapping_add(le(8));
    final_mix(&mut a, &mut b, &mut c);
    c
}

fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c) ^ c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a) ^ a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b) ^ b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c) ^ c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a) ^ a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b) ^ b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

fn final_mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *c = (*c ^ *b).wrapping_sub(b.rotate_left(14));
    *a = (*a ^ *c).wrapping_sub(c.rotate_left(11));
    *b = (*b ^ *a).wrapping_sub(a.rotate_left(25));
    *c = (*c ^ *b).wrapping_sub(b.rotate_left(16));
    *a = (*a ^ *c).wrapping_sub(c.rotate_left(4));
    *b = (*b ^ *a).wrapping_sub(a.rotate_left(14));
    *c = (*c ^ *b).wrapping_sub(b.rotate_left(24));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owners(table: &[usize], link: usize) -> usize {
        table.iter().filter(|&&l| l == link).count()
    }

    #[test]
    fn base_layout_follows_weights() {
        let t = table(&[(0, 1, true), (1, 1, true), (2, 2, true)]);
        assert_eq!(t.len(), BUCKETS as usize);
        assert_eq!([owners(&t, 0), owners(&t, 1), owners(&t, 2)], [60, 60, 120]);
        let t = table(&[(0, 1, true), (1, 2, true)]);
        assert_eq!([owners(&t, 0), owners(&t, 1)], [80, 160]);
        assert_eq!(&t[..6], [1, 0, 1, 1, 0, 1]);
        assert_eq!(
            ranges(&t[..6]),
            [(0, 0, 1), (1, 1, 0), (2, 3, 1), (4, 4, 0), (5, 5, 1)]
        );
        assert!(table(&[(0, 1, false)]).is_empty());
    }

    #[test]
    fn a_dead_link_moves_only_its_own_buckets() {
        let all = table(&[(0, 1, true), (1, 1, true), (2, 2, true)]);
        let without_1 = table(&[(0, 1, true), (1, 1, false), (2, 2, true)]);
        for (bucket, (&before, &after)) in all.iter().zip(&without_1).enumerate() {
            if before != 1 {
                assert_eq!(before, after, "bucket {bucket} of a live link moved");
            } else {
                assert_ne!(after, 1);
            }
        }
        let moved_to = |link| {
            all.iter()
                .zip(&without_1)
                .filter(|&(&b, &a)| b == 1 && a == link)
                .count()
        };
        assert_eq!((moved_to(0), moved_to(2)), (20, 40), "spread by weight");
    }

    #[test]
    fn jhash_matches_lookup3() {
        // lookup3.c's published hashlittle() values, which the kernel's jhash equals on a
        // little-endian CPU.
        assert_eq!(jhash(b"", 0), 0xdeadbeef);
        if cfg!(target_endian = "little") {
            assert_eq!(jhash(b"Four score and seven years ago", 0), 0x17770551);
            assert_eq!(jhash(b"Four score and seven years ago", 1), 0xcd628161);
        }
        assert!(bucket("192.168.77.10".parse().unwrap(), None) < BUCKETS);
    }
}
