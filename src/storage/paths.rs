//! The only place object keys are formatted. The layout (docs/format.md "Store layout"):
//! - `v1/deks/<agent hex>/<dek id hex>.dek` — one DEK record each;
//! - `v1/segments/<yyyy-mm-dd>/<segment id hex>.seg` — segment objects, the id starting with
//!   the creation time so keys sort by time;
//! - `v1/audit/checkpoints/<chain number, 20 digits>-<signed at, us>.json` — the server's
//!   signed audit checkpoints.

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

/// The (agent, DEK id) a key of the form `v1/deks/<agent hex>/<dek id hex>.dek` names: lowercase
/// hex of a valid agent id and 32 lowercase hex digits, exactly as `dek_record` writes them.
/// `None` for any other key (docs/format.md "Object names").
pub fn parse_dek_record(key: &Path) -> Option<(AgentId, DekId)> {
    let rest = key.as_ref().strip_prefix("v1/deks/")?;
    let (agent, file) = rest.split_once('/')?;
    let dek = file.strip_suffix(".dek")?;
    let agent = AgentId::new(String::from_utf8(hex::decode(agent).ok()?).ok()?).ok()?;
    let dek = DekId(hex::decode(dek).ok()?.try_into().ok()?);
    (dek_record(&agent, dek) == *key).then_some((agent, dek))
}

pub fn segment(created_us: i64, id: &[u8; 16]) -> Path {
    let (y, m, d) = civil_date(created_us.div_euclid(86_400_000_000));
    Path::from(format!(
        "v1/segments/{y:04}-{m:02}-{d:02}/{}.seg",
        hex::encode(id)
    ))
}

pub fn audit_checkpoints_prefix() -> Path {
    Path::from("v1/audit/checkpoints")
}

/// Where the audit checkpoint of chain row `chain_seq`, signed at `at_us`, goes: zero-padded
/// so keys sort by chain number.
pub fn audit_checkpoint(chain_seq: i64, at_us: i64) -> Path {
    Path::from(format!("v1/audit/checkpoints/{chain_seq:020}-{at_us}.json"))
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
        assert_eq!(
            audit_checkpoint(42, t).as_ref(),
            "v1/audit/checkpoints/00000000000000000042-1795773600000000.json"
        );
        assert_eq!(audit_checkpoints_prefix().as_ref(), "v1/audit/checkpoints");
        assert!(
            audit_checkpoint(1, 0)
                .as_ref()
                .starts_with(&format!("{}/", audit_checkpoints_prefix()))
        );
    }

    #[test]
    fn dek_record_keys_parse_only_in_their_one_form() {
        let agent = AgentId::new("ts 01/β").unwrap();
        let key = dek_record(&agent, DekId([0xab; 16]));
        assert_eq!(parse_dek_record(&key), Some((agent, DekId([0xab; 16]))));
        for bad in [
            "v1/deks/74732030312fceb2/ABABABABABABABABABABABABABABABAB.dek",
            "v1/deks/74732030312FCEB2/abababababababababababababababab.dek",
            "v1/deks/74732030312fceb2/abab.dek",
            "v1/deks/74732030312fceb2/garbage.dek",
            "v1/deks/74732030312fceb2/abababababababababababababababab.bin",
            "v1/deks/flooder/abababababababababababababababab.dek",
            "v1/deks/0a/abababababababababababababababab.dek",
            "v1/deks/74/x/abababababababababababababababab.dek",
            "v1/deks/abababababababababababababababab.dek",
        ] {
            assert_eq!(parse_dek_record(&Path::from(bad)), None, "{bad}");
        }
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(-1), (1969, 12, 31));
        assert_eq!(civil_date(11_016), (2000, 2, 29));
    }
}
