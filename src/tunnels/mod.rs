//! Tunnel provisioning: a UUID tunnel per site with a CGNAT address.
//!
//! Pure parts first: [`username`] (UUID ↔ the 26-character OpenVPN user),
//! [`pool`] (the CGNAT allocator), [`routeros`] (the router's script) and
//! [`openvpn`] (the server's ccd files and config fragment); [`store`] keeps
//! sites in SQLite. Storage, the RouterOS and OpenVPN renderers
//! and the HTTP API build on them.

pub mod export;
pub mod openvpn;
pub mod pool;
pub mod routeros;
pub mod store;
pub mod username;
