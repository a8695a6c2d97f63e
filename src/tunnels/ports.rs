//! The management traffic a tunnel carries, in one table: the router's
//! scripts accept it on the router, and agents allow it (and nothing else)
//! through the OpenVPN servers.

/// Towards the router, from the management networks: `(protocol, ports)`.
pub const INBOUND: &[(&str, &str)] = &[
    ("tcp", "179"),       // BGP security feeds
    ("udp", "161"),       // SNMP
    ("tcp", "8728,8729"), // RouterOS API
    ("tcp", "8291"),      // Winbox
    ("tcp", "22"),        // SSH
];

/// From the router, to the management networks: `(protocol, ports)`.
pub const OUTBOUND: &[(&str, &str)] = &[
    ("udp", "53"),   // DNS for content filtering
    ("tcp", "53"),   // DNS for content filtering
    ("udp", "2055"), // traffic-flow export
    ("udp", "162"),  // SNMP traps
    ("udp", "514"),  // system logs
    ("tcp", "179"),  // BGP security feeds
];
