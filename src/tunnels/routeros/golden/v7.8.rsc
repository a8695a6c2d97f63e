# mgnt job 9c1d2e3f-4a5b-4c6d-8e7f-0a1b2c3d4e5f
# mgnt management tunnel 3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c (RouterOS 7.8)
# One block: an imported file gives each top-level line its own scope.
{
:global mgntJob "9c1d2e3f-4a5b-4c6d-8e7f-0a1b2c3d4e5f"
:global mgntJobError "installing the CA"
:local tag "mgnt:3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c"
:if (([:len [/certificate find fingerprint="5e8f2a6c1b7d4e9f0a3c6b8d2e5f7a9c1b4d6e8f0a2c4e6b8d0f2a4c6e8b0d2f"]] = 0)) do={
/tool fetch url="https://routers.mkcld.io/router/v1/ca.pem" dst-path="mgnt-ca.pem" check-certificate=no
/certificate import file-name="mgnt-ca.pem" passphrase=""
/file remove [find name="mgnt-ca.pem"]
}
:if (([:len [/certificate find fingerprint="5e8f2a6c1b7d4e9f0a3c6b8d2e5f7a9c1b4d6e8f0a2c4e6b8d0f2a4c6e8b0d2f"]] = 0)) do={:error "the downloaded mgnt CA does not match its fingerprint"}
:set mgntJobError "removing the previous tunnel"
/interface ovpn-client remove [find name="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c"]
/ppp profile remove [find name="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c"]
/ip firewall filter remove [find comment=$tag]
/ip firewall address-list remove [find comment=$tag]
:set mgntJobError "adding the tunnel, disabled"
/ppp profile add name="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" change-tcp-mss=yes use-encryption=required
/interface ovpn-client add name="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" connect-to="mgnt.mkcld.io" port=8443 mode=ip user="h4vwyhu2jvhixmocpvpj6cq3fq" password="s3cr\"et\$pw" profile="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" certificate=none verify-server-certificate=yes cipher=aes256-cbc auth=sha1 add-default-route=no disabled=yes comment=$tag
:set mgntJobError "adding the firewall rules"
/ip firewall address-list add list=$tag address=100.64.0.1 comment=$tag
/ip firewall address-list add list=$tag address=10.20.0.0/16 comment=$tag
:local top [/ip firewall filter find dynamic=no]
:if ([:len $top] > 0) do={/ip firewall filter add chain=input in-interface="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" connection-state=established,related action=accept comment=$tag place-before=[:pick $top 0]} else={/ip firewall filter add chain=input in-interface="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" connection-state=established,related action=accept comment=$tag}
:if ([:len $top] > 0) do={/ip firewall filter add chain=input in-interface="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" src-address-list=$tag protocol=tcp dst-port=179 action=accept comment=$tag place-before=[:pick $top 0]} else={/ip firewall filter add chain=input in-interface="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" src-address-list=$tag protocol=tcp dst-port=179 action=accept comment=$tag}
:if ([:len $top] > 0) do={/ip firewall filter add chain=input in-interface="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" src-address-list=$tag protocol=udp dst-port=161 action=accept comment=$tag place-before=[:pick $top 0]} else={/ip firewall filter add chain=input in-interface="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" src-address-list=$tag protocol=udp dst-port=161 action=accept comment=$tag}
:if ([:len $top] > 0) do={/ip firewall filter add chain=input in-interface="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" src-address-list=$tag protocol=tcp dst-port=8728,8729 action=accept comment=$tag place-before=[:pick $top 0]} else={/ip firewall filter add chain=input in-interface="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" src-address-list=$tag protocol=tcp dst-port=8728,8729 action=accept comment=$tag}
:if ([:len $top] > 0) do={/ip firewall filter add chain=input in-interface="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" src-address-list=$tag protocol=tcp dst-port=8291 action=accept comment=$tag place-before=[:pick $top 0]} else={/ip firewall filter add chain=input in-interface="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" src-address-list=$tag protocol=tcp dst-port=8291 action=accept comment=$tag}
:if ([:len $top] > 0) do={/ip firewall filter add chain=input in-interface="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" src-address-list=$tag protocol=tcp dst-port=22 action=accept comment=$tag place-before=[:pick $top 0]} else={/ip firewall filter add chain=input in-interface="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" src-address-list=$tag protocol=tcp dst-port=22 action=accept comment=$tag}
:if ([:len $top] > 0) do={/ip firewall filter add chain=input in-interface="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" src-address=100.64.0.1 protocol=icmp action=accept comment=$tag place-before=[:pick $top 0]} else={/ip firewall filter add chain=input in-interface="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" src-address=100.64.0.1 protocol=icmp action=accept comment=$tag}
:if ([:len $top] > 0) do={/ip firewall filter add chain=input in-interface="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" action=drop comment=$tag place-before=[:pick $top 0]} else={/ip firewall filter add chain=input in-interface="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" action=drop comment=$tag}
:if ([:len $top] > 0) do={/ip firewall filter add chain=output out-interface="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" connection-state=established,related action=accept comment=$tag place-before=[:pick $top 0]} else={/ip firewall filter add chain=output out-interface="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" connection-state=established,related action=accept comment=$tag}
:if ([:len $top] > 0) do={/ip firewall filter add chain=output out-interface="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" dst-address-list=$tag protocol=udp dst-port=53 action=accept comment=$tag place-before=[:pick $top 0]} else={/ip firewall filter add chain=output out-interface="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" dst-address-list=$tag protocol=udp dst-port=53 action=accept comment=$tag}
:if ([:len $top] > 0) do={/ip firewall filter add chain=output out-interface="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" dst-address-list=$tag protocol=tcp dst-port=53 action=accept comment=$tag place-before=[:pick $top 0]} else={/ip firewall filter add chain=output out-interface="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" dst-address-list=$tag protocol=tcp dst-port=53 action=accept comment=$tag}
:if ([:len $top] > 0) do={/ip firewall filter add chain=output out-interface="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" dst-address-list=$tag protocol=udp dst-port=2055 action=accept comment=$tag place-before=[:pick $top 0]} else={/ip firewall filter add chain=output out-interface="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" dst-address-list=$tag protocol=udp dst-port=2055 action=accept comment=$tag}
:if ([:len $top] > 0) do={/ip firewall filter add chain=output out-interface="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" dst-address-list=$tag protocol=udp dst-port=162 action=accept comment=$tag place-before=[:pick $top 0]} else={/ip firewall filter add chain=output out-interface="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" dst-address-list=$tag protocol=udp dst-port=162 action=accept comment=$tag}
:if ([:len $top] > 0) do={/ip firewall filter add chain=output out-interface="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" dst-address-list=$tag protocol=udp dst-port=514 action=accept comment=$tag place-before=[:pick $top 0]} else={/ip firewall filter add chain=output out-interface="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" dst-address-list=$tag protocol=udp dst-port=514 action=accept comment=$tag}
:if ([:len $top] > 0) do={/ip firewall filter add chain=output out-interface="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" dst-address-list=$tag protocol=tcp dst-port=179 action=accept comment=$tag place-before=[:pick $top 0]} else={/ip firewall filter add chain=output out-interface="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" dst-address-list=$tag protocol=tcp dst-port=179 action=accept comment=$tag}
:if ([:len $top] > 0) do={/ip firewall filter add chain=output out-interface="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" dst-address=100.64.0.1 protocol=icmp action=accept comment=$tag place-before=[:pick $top 0]} else={/ip firewall filter add chain=output out-interface="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" dst-address=100.64.0.1 protocol=icmp action=accept comment=$tag}
:if ([:len $top] > 0) do={/ip firewall filter add chain=output out-interface="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" action=drop comment=$tag place-before=[:pick $top 0]} else={/ip firewall filter add chain=output out-interface="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" action=drop comment=$tag}
:if ([:len $top] > 0) do={/ip firewall filter add chain=forward in-interface="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" action=drop comment=$tag place-before=[:pick $top 0]} else={/ip firewall filter add chain=forward in-interface="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" action=drop comment=$tag}
:if ([:len $top] > 0) do={/ip firewall filter add chain=forward out-interface="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" action=drop comment=$tag place-before=[:pick $top 0]} else={/ip firewall filter add chain=forward out-interface="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c" action=drop comment=$tag}
:set mgntJobError "adding the live-view user"
/user remove [find name="mgnt-live"]
/user group remove [find name="mgnt-live"]
/user group add name="mgnt-live" policy=read,api,reboot
/user add name="mgnt-live" group="mgnt-live" password="live\"pw\$x" address=100.64.0.1/32,10.20.0.0/16
:set mgntJobError "enabling the tunnel"
/interface ovpn-client enable [find name="3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c"]
:set mgntJobError ""
}
