'use strict';
'require form';
'require uci';
'require connmark-lb.common as common';

/* config rule (first match decides the policy of a new connection) and config set. */
return common.ConfigView.extend({
	render: function() {
		var m, s, o;

		m = new form.Map('connmark-lb', _('Multi-WAN rules'),
			_('Rules are matched in order; the first match decides. With policies but no rules, all traffic uses the first policy. Traffic that matches no rule is left to the main routing table.'));

		s = common.grid(m, 'rule', _('Rules'), _('Add rule'));
		s.sortable = true;

		s.tab('match', _('Match'));
		s.tab('target', _('Target'));

		o = s.taboption('match', form.ListValue, 'family', _('Family'));
		o.value('any', _('any'));
		o.value('ipv4', _('IPv4'));
		o.value('ipv6', _('IPv6'));
		o.default = 'any';
		o.modalonly = true;

		o = s.taboption('match', form.Value, 'proto', _('Protocol'),
			_('all (default), tcp, udp, icmp or a protocol number.'));
		o.placeholder = 'all';
		o.validate = common.proto;

		[ [ 'src', _('Source address'), _('Source port') ],
		  [ 'dest', _('Destination address'), _('Destination port') ] ].forEach(function(d) {
			o = s.taboption('match', form.DynamicList, d[0] + '_ip', d[1],
				_('Address or prefix, all of one family.'));
			o.validate = this.addressValidator();
			o = s.taboption('match', form.Value, d[0] + '_port', d[2],
				_('443, 8000-8080 or 22,80,443; needs protocol tcp or udp.'));
			o.validate = this.portValidator();
			o.modalonly = (d[0] == 'src') ? true : null;
		}, this);

		var sets = uci.sections('connmark-lb', 'set').map(function(set) { return set['.name']; });
		[ [ 'src_set', _('Source set') ], [ 'dest_set', _('Destination set') ] ].forEach(function(d) {
			o = s.taboption('match', form.Value, d[0], d[1],
				_('An address set (below); dnsmasq can fill it from domain names.'));
			sets.forEach(function(name) { o.value(name); });
			o.validate = common.name;
			o.modalonly = true;
		});

		o = s.taboption('target', form.ListValue, 'use_policy', _('Policy'),
			_('A policy, or default (not balanced: main table), unreachable, blackhole.'));
		var policies = uci.sections('connmark-lb', 'policy');
		policies.forEach(function(policy) { o.value(policy['.name']); });
		if (policies.length == 0 && uci.sections('connmark-lb', 'member').length == 0)
			o.value('balanced', _('balanced (every enabled interface by its weight)'));
		o.value('default', _('default (main table)'));
		o.value('unreachable', _('unreachable'));
		o.value('blackhole', _('blackhole'));
		o.rmempty = false;

		o = s.taboption('target', form.Flag, 'sticky', _('Sticky'),
			_('Later new connections of the same source use the link its first one got, while it keeps coming back within the timeout.'));

		o = s.taboption('target', form.Value, 'timeout', _('Sticky timeout (s)'),
			_('Seconds since the source\'s last new connection after which it may pick again.'));
		o.placeholder = '600';
		o.validate = common.int(1, 1000000);
		o.depends('sticky', '1');
		o.modalonly = true;

		s = m.section(form.TypedSection, 'set', _('Address sets'),
			_('Sets NAME_v4 and NAME_v6 in our table, for src_set and dest_set; dnsmasq fills them with nftset=/example.com/4#inet#connmark_lb#NAME_v4,6#inet#connmark_lb#NAME_v6. Their contents survive reloads.'));
		s.addremove = true;
		s.anonymous = false;

		o = s.option(form.DynamicList, 'entry', _('Static entries'),
			_('Addresses or prefixes always in the set.'));
		o.validate = common.prefix;

		return m.render();
	},

	/* Addresses or prefixes of the rule's family, or else all of one family. */
	addressValidator: function() {
		return function(section_id, value) {
			var r = common.prefix(section_id, value);
			if (r !== true || value == null || value === '')
				return r;
			var mine = common.family(value);
			var chosen = this.section.formvalue(section_id, 'family');
			var label = { ipv4: 'IPv4', ipv6: 'IPv6' };
			if (chosen == 'ipv4' || chosen == 'ipv6')
				return chosen == mine ? true
					: _('%s is %s, but the rule matches only %s traffic').format(value, label[mine], label[chosen]);
			var others = [ 'src_ip', 'dest_ip' ].reduce(function(all, option) {
				return all.concat(L.toArray(this.section.formvalue(section_id, option)));
			}.bind(this), []);
			var first = others.map(common.family).filter(function(f) { return f != null; })[0];
			return (first == null || first == mine) ? true
				: _('%s is %s, but the rule matches only %s traffic').format(value, label[mine], label[first]);
		};
	},

	/* Ports need protocol tcp or udp, as the binary says. */
	portValidator: function() {
		return function(section_id, value) {
			var r = common.ports(section_id, value);
			if (r !== true || value == null || value === '')
				return r;
			var proto = this.section.formvalue(section_id, 'proto');
			return (proto == 'tcp' || proto == 'udp') ? true
				: _('ports need option proto \'tcp\' or \'udp\'');
		};
	}
});
