//! PCI bus id normalisation: NVML writes `00000000:3B:00.0` (8-hex domain, upper case), sysfs
//! and hwloc use `0000:3b:00.0`; everything in the agent uses the latter.

/// A bus id that is not `[domain:]bus:device.function` in hex.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed PCI bus id {0:?} (expected e.g. 0000:3b:00.0)")]
pub struct BadBusId(pub String);

/// Normalises a PCI bus id to lower case with a 4-hex-digit domain.
pub fn normalise_bus_id(raw: &str) -> Result<String, BadBusId> {
    let bad = || BadBusId(raw.to_string());
    let trimmed = raw.trim().trim_end_matches('\0');
    let mut parts: Vec<&str> = trimmed.split(':').collect();
    if parts.len() == 2 {
        parts.insert(0, "0");
    }
    let [domain, bus, devfn] = parts.as_slice() else {
        return Err(bad());
    };
    let (device, function) = devfn.split_once('.').ok_or_else(bad)?;
    let hex = |s: &str, max: u32| {
        u32::from_str_radix(s, 16)
            .ok()
            .filter(|v| *v <= max && !s.is_empty())
    };
    let domain = hex(domain, 0xffff_ffff).ok_or_else(bad)?;
    // Domains above 0xffff do not exist on Linux; NVML only pads with zeros.
    let domain = u16::try_from(domain).map_err(|_| bad())?;
    let bus = hex(bus, 0xff).ok_or_else(bad)?;
    let device = hex(device, 0x1f).ok_or_else(bad)?;
    let function = hex(function, 0x7).ok_or_else(bad)?;
    Ok(format!("{domain:04x}:{bus:02x}:{device:02x}.{function:x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvml_sysfs_and_short_forms_agree() {
        for raw in [
            "00000000:3B:00.0",
            "0000:3b:00.0",
            "3b:00.0",
            " 00000000:3b:00.0\0",
        ] {
            assert_eq!(
                normalise_bus_id(raw).as_deref(),
                Ok("0000:3b:00.0"),
                "{raw}"
            );
        }
        assert_eq!(
            normalise_bus_id("00000001:AF:1F.7").as_deref(),
            Ok("0001:af:1f.7")
        );
    }

    #[test]
    fn garbage_is_refused() {
        for raw in [
            "",
            "3b",
            "zz:00.0",
            "0000:3b:00",
            "0000:3b:20.0",
            "0000:3b:00.8",
            "100000000:3b:00.0",
            "1:2:3:4.0",
        ] {
            assert!(normalise_bus_id(raw).is_err(), "{raw}");
        }
    }
}
