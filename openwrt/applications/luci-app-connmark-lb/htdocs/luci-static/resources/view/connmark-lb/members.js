'use strict';
'require form';
'require uci';
'require connmark-lb.common as common';

/* config member: an interface with the metric and weight one policy gives it. */
return common.ConfigView.extend({
	render: function() {
		var m, s, o;

		m = new form.Map('connmark-lb', _('Multi-WAN members'),
			_('A member is an interface with the metric and weight one policy gives it. Metric and weight default to the interface\'s own.'));

		s = common.grid(m, 'member', _('Members'), _('Add member'));

		o = s.option(form.ListValue, 'interface', _('Interface'),
			_('The interface section this member stands for.'));
		uci.sections('connmark-lb', 'interface').forEach(function(iface) {
			o.value(iface['.name']);
		});
		o.rmempty = false;
		o.validate = function(section_id, value) {
			return (value == null || value === '')
				? _('expected the name of an interface section') : true;
		};

		o = s.option(form.Value, 'metric', _('Metric'),
			_('1..1000; the live members of the lowest metric share the traffic, higher metrics are backups.'));
		o.placeholder = _('interface\'s');
		o.validate = common.int(1, 1000);

		o = s.option(form.Value, 'weight', _('Weight'),
			_('1..1000, share of new connections among members of the same metric.'));
		o.placeholder = _('interface\'s');
		o.validate = common.int(1, 1000);

		return m.render();
	}
});
