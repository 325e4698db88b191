//! How a client is counted: every per-IP limit and cap, at the HTTP edge
//! and in the OpenID Provider, keys its client the same way.

use std::net::IpAddr;

/// The key an IP is counted under. An IPv6 client usually holds a whole
/// /64 (SLAAC, privacy addresses), so one client is one /64, not one
/// address: otherwise each of its 2^64 addresses would get its own quota
/// and caps. An IPv4-mapped IPv6 address is the IPv4 client it carries.
/// Every per-IP limit and cap goes through this.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
    }
}
