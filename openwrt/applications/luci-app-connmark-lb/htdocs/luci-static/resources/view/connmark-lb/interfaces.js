'use strict';
'require form';
'require connmark-lb.common as common';

/* config interface: one WAN link, its balancing weight and its health tracking. */
return common.ConfigView.extend({
	render: function() {
		var m, s, o;

		m = new form.Map('connmark-lb', _('Multi-WAN interfaces'),
			_('One section per WAN link. Links are numbered in the order of these sections (mark and routing table), so keep the order stable. Save & Apply reloads the daemon without a gap.'));

		s = common.grid(m, 'interface', _('Interfaces'), _('Add interface'));
		s.tab('general', _('General'));
		s.tab('tracking', _('Health tracking'));
		s.tab('quality', _('Quality'));
		s.tab('advanced', _('Advanced'));

		o = s.taboption('general', form.Flag, 'enabled', _('Enabled'),
			_('A disabled interface keeps its number (mark, table) but is not used.'));
		o.default = '1';
		o.editable = true;

		o = s.taboption('general', form.Value, 'interface', _('Network interface'),
			_('netifd interface to resolve device, gateway and address from; while it is down (or has no default route) the link is down. Default: the section name, unless a device is given.'));
		o.validate = common.name;
		o.placeholder = _('section name');

		o = s.taboption('general', form.Value, 'device', _('Device'),
			_('Kernel device (eth1, pppoe-wan, eth0.2); required unless the network interface is given.'));
		o.validate = common.device;

		o = common.value(s, 'general', 'weight', _('Weight'),
			_('1..1000, share of new connections in the implicit policy.'), '1', common.int(1, 1000));
		o.modalonly = null;
		o.editable = true;

		o = common.value(s, 'general', 'metric', _('Metric'),
			_('1..1000, lower tiers are preferred; higher tiers are backups.'), '1', common.int(1, 1000));
		o.modalonly = null;

		o = s.taboption('general', form.ListValue, 'family', _('Family'),
			_('The address family this link carries.'));
		o.value('ipv4', _('IPv4'));
		o.value('ipv6', _('IPv6'));
		o.default = 'ipv4';
		o.modalonly = true;

		common.value(s, 'advanced', 'gateway', _('Gateway'),
			_('Next hop (of the link\'s family); without it the default route of the link is device-only (point-to-point).'),
			_('none'), common.addressOfFamily(false));
		common.value(s, 'advanced', 'source', _('SNAT source'),
			_('SNAT address; without it traffic leaving the device is masqueraded.'),
			_('masquerade'), common.addressOfFamily(true));

		o = s.taboption('advanced', form.Flag, 'nat', _('NAT'),
			_('Translate the source address of traffic leaving this link.'));
		o.default = '1';
		o.modalonly = true;

		o = s.taboption('advanced', form.DynamicList, 'prefix', _('IPv6 prefixes'),
			_('Prefixes delegated by this link; connections from them stay on it.'));
		o.validate = function(section_id, value) {
			var r = common.prefix6(section_id, value);
			return r !== true ? r : common.twice(this, section_id, value);
		};
		o.depends('family', 'ipv6');
		o.modalonly = true;

		o = s.taboption('advanced', form.MultiValue, 'flush_conntrack', _('Flush conntrack'),
			_('Events that delete this link\'s conntrack entries; "never" alone for none.'));
		o.value('ifup', _('ifup (device came up)'));
		o.value('ifdown', _('ifdown (device went down)'));
		o.value('connected', _('connected (link usable again)'));
		o.value('disconnected', _('disconnected (link unusable)'));
		o.value('never', _('never'));
		o.placeholder = 'disconnected';
		o.validate = function(section_id) {
			var words = L.toArray(this.formvalue(section_id));
			if (words.indexOf('never') >= 0 && words.length > 1)
				return _('expected ifup, ifdown, connected, disconnected (or never alone), got "%s"').format('never');
			return true;
		};
		o.modalonly = true;

		o = s.taboption('tracking', form.DynamicList, 'track_ip', _('Tracking targets'),
			_('Targets probed with ICMP echo through this link; without targets the link is up while its device is.'));
		o.validate = function(section_id, value) {
			var r = common.addressOfFamily(false).call(this, section_id, value);
			return r !== true ? r : common.twice(this, section_id, value);
		};
		o.modalonly = true;

		o = s.taboption('tracking', form.Flag, 'passive', _('Passive health'),
			_('The LAN\'s own unanswered connections make the link suspect, and a burst of probes confirms or clears it at once.'));
		o.default = '1';
		o.modalonly = true;

		common.value(s, 'tracking', 'reliability', _('Reliability'),
			_('Targets that must answer for a round to be good, 1..number of targets.'), '1',
			function(section_id, value) {
				var r = common.int(1, 1000)(section_id, value);
				if (r !== true || value === '' || value == null)
					return r;
				var targets = L.toArray(this.section.formvalue(section_id, 'track_ip')).length;
				if (targets > 0 && common.parseU32(value) > targets)
					return _('expected at most the number of track_ip targets (%d), got %s').format(targets, value);
				return true;
			});

		[
			[ 'count', _('Count'), _('Echo requests per target and round, 1..100; a target answers when any of them gets a reply.'), '3', common.int(1, 100) ],
			[ 'timeout', _('Timeout (s)'), _('Seconds a round waits for replies. Default 1, or the interval or recovery interval if shorter.'), '1', common.seconds ],
			[ 'interval', _('Interval (s)'), _('Seconds from one round\'s start to the next while the link is up or down.'), '1', common.seconds ],
			[ 'failure_interval', _('Failure interval (s)'), _('The interval while the link is failing (such a round waits three round trips, at least 0.3 s); default: 0.3, or interval if shorter.'), '0.3', common.seconds ],
			[ 'recovery_interval', _('Recovery interval (s)'), _('The interval while the link is recovering; default: interval.'), _('interval'), common.seconds ],
			[ 'down', _('Down after'), _('Consecutive bad rounds that take the link out.'), '3', common.int(1, 1000) ],
			[ 'up', _('Up after'), _('Consecutive good rounds that bring it back.'), '5', common.int(1, 1000) ]
		].forEach(function(d) {
			common.value(s, 'tracking', d[0], d[1], d[2], d[3], d[4]);
		});

		o = s.taboption('tracking', form.ListValue, 'initial_state', _('Initial state'),
			_('online: used from the start; offline: only after "up" good rounds.'));
		o.value('online', _('online'));
		o.value('offline', _('offline'));
		o.default = 'online';
		o.modalonly = true;

		o = s.taboption('quality', form.Flag, 'check_quality', _('Check quality'),
			_('Also take the link out when its latency or loss passes the limits below.'));
		o.modalonly = true;

		[
			[ 'failure_latency', _('Failure latency (ms)'), _('While the link is in use, a round whose replies are this slow or slower is bad.'), '1000' ],
			[ 'recovery_latency', _('Recovery latency (ms)'), _('While it is out of use, a round is good only this fast or faster; at most the failure latency.'), '500' ],
			[ 'failure_loss', _('Failure loss (%)'), _('While the link is in use, a round that lost this share of requests or more is bad.'), '40' ],
			[ 'recovery_loss', _('Recovery loss (%)'), _('While it is out of use, a round is good only at this loss or less; at most the failure loss.'), '10' ]
		].forEach(function(d) {
			common.value(s, 'quality', d[0], d[1], d[2], d[3], common.threshold(d[0]))
				.depends('check_quality', '1');
		});

		return m.render();
	}
});
