//! The only place object keys are formatted. The layout (docs/format.md "Store layout"):
//! - `v1/deks/<agent hex>/<dek id hex>.dek` — one DEK record each;
//! - `v1/segments/<yyyy-mm-dd>/<segment id hex>.seg` — segment objects, the id starting with
//!   the creation time so keys sort by time.

use object_store::path::Path;

use crate::protocol::{AgentId, DekId};

pub const ROOT: &str = "v1";

pub fn deks_prefix() -> Path {
    Path::from("v1/deks")
}

pub fn segments_prefix() -> Path {
    Path::from("v1/segments")
}

pub fn dek_record(agent: &AgentId, dek: DekId) -> Path {
    Path::from(format!("v1/deks/{}/{}.dek", agent.hex(), dek))
}

pub fn segment(created_us: i64, id: &[u8; 16]) -> Path {
    let (y, m, d) = civil_date(created_us.div_euclid(86_400_000_000));
    Path::from(format!(
        "v1/segments/{y:04}-{m:02}-{d:02}/{}.seg",
        hex::encode(id)
    ))
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_date(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_pinned() {
        let agent = AgentId::new("ts 01/β").unwrap();
        assert_eq!(
            dek_record(&agent, DekId([0xab; 16])).as_ref(),
            "v1/deks/74732030312fceb2/abababababababababababababababab.dek"
        );
        // 2026-11-27T10:00:00Z
        let t = 1_795_773_600_000_000;
        assert_eq!(
            segment(t, &[1; 16]).as_ref(),
            "v1/segments/2026-11-27/01010101010101010101010101010101.seg"
        );
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(-1), (1969, 12, 31));
        assert_eq!(civil_date(11_016), (2000, 2, 29));
    }
}
