//! The values of a Go `map[string]*T` in another process (see `routes`: a `ServeMux` node with
//! more than eight children keeps them in one). Two layouts: the swiss table of Go 1.24+
//! (`internal/runtime/maps`) and the bucket array (`hmap`) before it. Both are walked with
//! bounds: the program may be writing the map while it is read.

use super::routes::{Memory, RouteTableError, read_u64};

/// More entries than this in one map: taken as inconsistent memory.
const MAX_ENTRIES: usize = 4096;
/// Groups/buckets of 8 slots: a power of two up to this many.
const MAX_GROUPS: u64 = 1024;

/// A swiss-table group for `map[string]*T`: 8 control bytes, then 8 slots of key (16) and
/// element (8).
const GROUP_SIZE: u64 = 8 + 8 * 24;
/// An `hmap` bucket for `map[string]*T`: 8 top hashes, 8 keys, 8 elements, overflow pointer.
const BUCKET_SIZE: u64 = 8 + 8 * 16 + 8 * 8 + 8;
/// `hmap` top-hash values below this mark empty or evacuated slots.
const MIN_TOP_HASH: u8 = 5;
/// `hmap.flags` bit: the map grows to the same size (old buckets as many as new).
const SAME_SIZE_GROW: u8 = 8;

fn inconsistent(address: u64, why: &str) -> RouteTableError {
    RouteTableError::Inconsistent {
        what: "Go map",
        address,
        why: why.to_owned(),
    }
}

/// The element pointers of the `map[string]*T` at `map` (the map header's address).
pub fn string_map_values(
    memory: &impl Memory,
    map: u64,
    swiss: bool,
) -> Result<Vec<u64>, RouteTableError> {
    let mut values = Vec::new();
    if swiss {
        swiss_values(memory, map, &mut values)?;
    } else {
        hmap_values(memory, map, &mut values)?;
    }
    Ok(values)
}

/// `maps.Map`: used u64, seed, dirPtr, dirLen. With `dirLen` 0 `dirPtr` is one group (a map of
/// at most 8 entries); else a directory of `*table`, where a table can appear several times.
fn swiss_values(memory: &impl Memory, map: u64, out: &mut Vec<u64>) -> Result<(), RouteTableError> {
    let dir = read_u64(memory, map.wrapping_add(16), "Go map directory")?;
    let dir_len = read_u64(memory, map.wrapping_add(24), "Go map directory length")?;
    if dir == 0 {
        return Ok(());
    }
    if dir_len == 0 {
        return swiss_group(memory, dir, out);
    }
    if dir_len > MAX_GROUPS {
        return Err(inconsistent(map, "directory too long"));
    }
    let mut tables = Vec::new();
    for i in 0..dir_len {
        let table = read_u64(memory, dir.wrapping_add(8 * i), "Go map table")?;
        if table != 0 && !tables.contains(&table) {
            tables.push(table);
        }
    }
    for table in tables {
        // table: used u16, capacity u16, growthLeft u16, localDepth u8, index int, groups
        // {data, lengthMask}.
        let groups = read_u64(memory, table.wrapping_add(16), "Go map groups")?;
        let mask = read_u64(memory, table.wrapping_add(24), "Go map group mask")?;
        if mask >= MAX_GROUPS || !(mask + 1).is_power_of_two() {
            return Err(inconsistent(table, "group count out of bounds"));
        }
        for g in 0..=mask {
            swiss_group(memory, groups.wrapping_add(g * GROUP_SIZE), out)?;
        }
    }
    Ok(())
}

fn swiss_group(
    memory: &impl Memory,
    group: u64,
    out: &mut Vec<u64>,
) -> Result<(), RouteTableError> {
    let ctrl = read_u64(memory, group, "Go map control word")?.to_le_bytes();
    for (slot, control) in (0u64..).zip(ctrl) {
        // Full slots have the high bit clear (empty is 0x80, deleted 0xfe).
        if control & 0x80 == 0 {
            push(
                out,
                read_u64(
                    memory,
                    group.wrapping_add(8 + slot * 24 + 16),
                    "Go map element",
                )?,
                group,
            )?;
        }
    }
    Ok(())
}

/// `hmap`: count, flags u8, B u8, noverflow u16, hash0 u32, buckets, oldbuckets. While it
/// grows, slots not yet moved are still in the old buckets (moved ones are marked there).
fn hmap_values(memory: &impl Memory, map: u64, out: &mut Vec<u64>) -> Result<(), RouteTableError> {
    let header = read_u64(memory, map.wrapping_add(8), "Go map flags")?.to_le_bytes();
    let (flags, b) = (header[0], header[1]);
    if b > 10 {
        return Err(inconsistent(map, "bucket count out of bounds"));
    }
    let buckets = read_u64(memory, map.wrapping_add(16), "Go map buckets")?;
    let old = read_u64(memory, map.wrapping_add(24), "Go map old buckets")?;
    hmap_buckets(memory, buckets, 1 << b, out)?;
    if old != 0 {
        let old_b = if flags & SAME_SIZE_GROW != 0 {
            b
        } else {
            b.saturating_sub(1)
        };
        hmap_buckets(memory, old, 1 << old_b, out)?;
    }
    Ok(())
}

fn hmap_buckets(
    memory: &impl Memory,
    buckets: u64,
    count: u64,
    out: &mut Vec<u64>,
) -> Result<(), RouteTableError> {
    if buckets == 0 {
        return Ok(());
    }
    for i in 0..count {
        let mut bucket = buckets.wrapping_add(i * BUCKET_SIZE);
        // Overflow chains are short; a long one is a cycle or garbage.
        for _ in 0..64 {
            let tophash = read_u64(memory, bucket, "Go map bucket")?.to_le_bytes();
            for (slot, top) in (0u64..).zip(tophash) {
                if top >= MIN_TOP_HASH {
                    push(
                        out,
                        read_u64(
                            memory,
                            bucket.wrapping_add(8 + 128 + slot * 8),
                            "Go map element",
                        )?,
                        bucket,
                    )?;
                }
            }
            bucket = read_u64(
                memory,
                bucket.wrapping_add(BUCKET_SIZE - 8),
                "Go map overflow",
            )?;
            if bucket == 0 {
                break;
            }
        }
    }
    Ok(())
}

fn push(out: &mut Vec<u64>, value: u64, at: u64) -> Result<(), RouteTableError> {
    if out.len() >= MAX_ENTRIES {
        return Err(inconsistent(at, "too many entries"));
    }
    out.push(value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::routes::tests::FakeMemory;
    use super::*;

    #[test]
    fn swiss_small_map_and_directory_of_tables() {
        let mut mem = FakeMemory::default();
        // A small map: dirPtr at one group, dirLen 0; slots 0 and 2 full, 1 deleted.
        let group = mem.alloc(GROUP_SIZE as usize);
        mem.put(group, &[0x12, 0xfe, 0x05, 0x80, 0x80, 0x80, 0x80, 0x80]);
        mem.put_u64(group + 8 + 16, 0xaaa);
        mem.put_u64(group + 8 + 24 + 16, 0xbad);
        mem.put_u64(group + 8 + 48 + 16, 0xbbb);
        let map = mem.alloc(48);
        mem.put_u64(map + 16, group);
        assert_eq!(string_map_values(&mem, map, true).unwrap(), [0xaaa, 0xbbb]);
        // A directory of two entries naming the same table of two groups.
        let groups = mem.alloc(2 * GROUP_SIZE as usize);
        mem.put(groups, &[0x80; 8]);
        mem.put(
            groups + GROUP_SIZE,
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
        );
        mem.put_u64(groups + GROUP_SIZE + 8 + 7 * 24 + 16, 0xccc);
        let table = mem.alloc(32);
        mem.put_u64(table + 16, groups);
        mem.put_u64(table + 24, 1);
        let dir = mem.alloc(16);
        mem.put_u64(dir, table);
        mem.put_u64(dir + 8, table);
        mem.put_u64(map + 16, dir);
        mem.put_u64(map + 24, 2);
        assert_eq!(string_map_values(&mem, map, true).unwrap(), [0xccc]);
        mem.put_u64(table + 24, 5); // not a power of two minus one
        assert!(string_map_values(&mem, map, true).is_err());
    }

    #[test]
    fn hmap_buckets_overflow_and_old_buckets() {
        let mut mem = FakeMemory::default();
        let buckets = mem.alloc(2 * BUCKET_SIZE as usize);
        let overflow = mem.alloc(BUCKET_SIZE as usize);
        mem.put(buckets, &[7, 0, 0, 0, 0, 0, 0, 0]);
        mem.put_u64(buckets + 136, 0x111);
        mem.put_u64(buckets + BUCKET_SIZE - 8, overflow);
        mem.put(overflow, &[0, 9, 0, 0, 0, 0, 0, 0]);
        mem.put_u64(overflow + 136 + 8, 0x222);
        mem.put(buckets + BUCKET_SIZE, &[1, 1, 1, 1, 1, 1, 1, 200]);
        mem.put_u64(buckets + BUCKET_SIZE + 136 + 56, 0x333);
        // Old buckets (growing from 1 to 2): one slot not yet moved, one moved (evacuatedX).
        let old = mem.alloc(BUCKET_SIZE as usize);
        mem.put(old, &[2, 6, 0, 0, 0, 0, 0, 0]);
        mem.put_u64(old + 136 + 8, 0x444);
        let map = mem.alloc(48);
        mem.put(map + 8, &[0, 1]);
        mem.put_u64(map + 16, buckets);
        mem.put_u64(map + 24, old);
        assert_eq!(
            string_map_values(&mem, map, false).unwrap(),
            [0x111, 0x222, 0x333, 0x444]
        );
        // A cycle of overflow buckets ends at the bound with too many entries, not a hang.
        mem.put_u64(overflow + BUCKET_SIZE - 8, overflow);
        mem.put(overflow, &[9; 8]);
        assert!(string_map_values(&mem, map, false).is_ok_and(|v| v.len() < MAX_ENTRIES));
    }
}
