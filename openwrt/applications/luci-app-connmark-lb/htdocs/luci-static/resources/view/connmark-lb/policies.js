'use strict';
'require form';
'require uci';
'require connmark-lb.common as common';

/* config policy: how new connections are spread over members. */
return common.ConfigView.extend({
	render: function() {
		var m, s, o;

		m = new form.Map('connmark-lb', _('Multi-WAN policies'),
			_('New connections go to the live members of the lowest live metric, by weight. With no policy and no member section, every enabled interface is balanced by its own weight.'));

		s = common.grid(m, 'policy', _('Policies'), _('Add policy'));

		o = s.option(form.MultiValue, 'use_member', _('Members'),
			_('At least one member whose interface is enabled.'));
		uci.sections('connmark-lb', 'member').forEach(function(member) {
			o.value(member['.name'], '%s (%s)'.format(member['.name'], member.interface || '?'));
		});
		o.rmempty = false;
		o.validate = function(section_id) {
			var chosen = L.toArray(this.formvalue(section_id));
			var live = chosen.some(function(name) {
				var member = uci.get('connmark-lb', name) || {};
				var iface = uci.get('connmark-lb', member.interface || '') || {};
				return iface['.type'] == 'interface' && iface.enabled != '0';
			});
			return live ? true : _('expected at least one member whose interface is enabled');
		};

		o = s.option(form.ListValue, 'last_resort', _('Last resort'),
			_('When no member is live: unreachable (clients get "network unreachable" at once), blackhole (silently dropped), default (main routing table).'));
		o.value('unreachable', _('unreachable'));
		o.value('blackhole', _('blackhole'));
		o.value('default', _('default (main table)'));
		o.default = 'unreachable';

		common.balance(s, _('How this policy spreads new connections; default: the global setting.'),
			_('global setting'))[1].modalonly = true;

		return m.render();
	}
});
