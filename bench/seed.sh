#!/bin/bash
# The seed recipe ("connmark load balancing with iptables", its complete script) for N links of
# the bench topology, as the baseline `make bench` measures connmark-lb against: one process per
# iptables/ip call, exactly as the recipe runs them, in the same order, with the same flushes.
#
# Usage: seed.sh LINKS RT_TABLES_FILE
# Runs inside the bench's router namespace: LAN device eth0, link I on device wanI with address
# 10.0.I.2 and gateway 10.0.I.1.
#
# Where the recipe had to be translated to this topology and machine (nothing else differs):
# - links: the recipe's two links become N; link I gets chains CONNMARKI/SNATI, mark I, the nth
#   rule `--every N --packet I-1` (every rule sees every new packet, as the recipe's chains
#   return) and routing table rt_linkI = 200+I (the recipe's 251/252 would run into the
#   reserved 253-255 beyond two links).
# - rt_tables: the recipe appends table names to /etc/iproute2/rt_tables, a file of the host.
#   The same `cat | grep` test and append run on RT_TABLES_FILE (a private file of the bench),
#   and the ip commands use the table numbers, which is what the names stand for.
# - routes: the recipe's `default dev ethX` assumes a modem that answers for every address;
#   our ISPs are routers on a /24, so the default route names the gateway: `via 10.0.I.1`.
# - rp_filter: the recipe disables it with `all = 0`. Since Linux 2.6.32 the kernel uses the
#   larger of `all` and the device's value, so `0` is also written for each WAN device (shell
#   builtins: no extra processes) to keep the recipe's behaviour.
# - loops over the links are bash arithmetic loops: no process beyond the recipe's own calls.
# - LOG rules stay; inside a network namespace other than the host's the kernel drops their
#   messages unless net.netfilter.nf_log_all_netns is set (the bench leaves it alone).

links=${1:?usage: seed.sh LINKS RT_TABLES_FILE}
rt_tables=${2:?usage: seed.sh LINKS RT_TABLES_FILE}

echo 1 >| /proc/sys/net/ipv4/ip_forward
echo 0 >| /proc/sys/net/ipv4/conf/all/rp_filter
for ((i = 1; i <= links; i++)); do
	echo 0 >| "/proc/sys/net/ipv4/conf/wan$i/rp_filter"
done

# flush all iptables entries
iptables -t filter -F
iptables -t filter -X
iptables -t nat -F
iptables -t nat -X
iptables -t mangle -F
iptables -t mangle -X
iptables -t filter -P INPUT ACCEPT
iptables -t filter -P OUTPUT ACCEPT
iptables -t filter -P FORWARD ACCEPT

# initialise chains that will do the work and log the packets
for ((i = 1; i <= links; i++)); do
	iptables -t mangle -N "CONNMARK$i"
	iptables -t mangle -A "CONNMARK$i" -j MARK --set-mark "$i"
	iptables -t mangle -A "CONNMARK$i" -j CONNMARK --save-mark
	iptables -t mangle -A "CONNMARK$i" -j LOG --log-prefix "iptables-mark$i: " --log-level info
done

iptables -t mangle -N RESTOREMARK
iptables -t mangle -A RESTOREMARK -j CONNMARK --restore-mark
iptables -t mangle -A RESTOREMARK -j LOG --log-prefix 'restore-mark: ' --log-level info

for ((i = 1; i <= links; i++)); do
	iptables -t nat -N "SNAT$i"
	iptables -t nat -A "SNAT$i" -j LOG --log-prefix "snat-to-10.0.$i.2: " --log-level info
	iptables -t nat -A "SNAT$i" -j SNAT --to-source "10.0.$i.2"
done

# restore the fwmark on packets that belong to an existing connection
iptables -t mangle -A PREROUTING -i eth0 -p tcp \
	-m state --state ESTABLISHED,RELATED -j RESTOREMARK

# if the mark is zero it means the packet does not belong to an existing connection
for ((i = 1; i <= links; i++)); do
	iptables -t mangle -A PREROUTING -p tcp -m state --state NEW \
		-m statistic --mode nth --every "$links" --packet "$((i - 1))" -j "CONNMARK$i"
done

for ((i = 1; i <= links; i++)); do
	iptables -t nat -A POSTROUTING -o "wan$i" -j "SNAT$i"
done

for ((i = 1; i <= links; i++)); do
	# shellcheck disable=SC2002 # the recipe's own pipeline: two processes per link
	if ! cat "$rt_tables" | grep -q "^$((200 + i))"; then
		echo "$((200 + i))     rt_link$i" >>"$rt_tables"
	fi
done

for ((i = 1; i <= links; i++)); do
	ip route flush table "$((200 + i))" 2>/dev/null
	ip route add table "$((200 + i))" default via "10.0.$i.1" dev "wan$i"
done

for ((i = 1; i <= links; i++)); do
	ip rule del from all fwmark "$i" lookup "$((200 + i))" 2>/dev/null
done
for ((i = links; i >= 1; i--)); do
	ip rule del from all fwmark "$i" 2>/dev/null
done
for ((i = 1; i <= links; i++)); do
	ip rule add fwmark "$i" table "$((200 + i))"
done

ip route flush cache
