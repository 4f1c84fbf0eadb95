'use strict';
'require form';
'require uci';
'require connmark-lb.common as common';

/* config globals 'globals': settings shared by every link. */
return common.ConfigView.extend({
	render: function() {
		var m, s, o;

		m = new form.Map('connmark-lb', _('Multi-WAN global settings'));

		if (uci.get('connmark-lb', 'globals') == null)
			uci.add('connmark-lb', 'globals', 'globals');

		s = m.section(form.NamedSection, 'globals', 'globals', _('Global settings'));

		o = s.option(form.Flag, 'enabled', _('Enabled'),
			_('Off: the rules are removed and nothing else is done.'));
		o.default = '1';
		o.rmempty = false;

		o = s.option(form.ListValue, 'backend', _('Backend'),
			_('auto: nftables when nft is installed, iptables otherwise.'));
		o.value('auto', _('auto'));
		o.value('nftables', 'nftables');
		o.value('iptables', 'iptables');
		o.default = 'auto';

		common.balance(s, _('round-robin: exact weighted rotation; random: weighted; hash: by address, and when a link fails only its own sources move.'));

		o = s.option(form.Flag, 'local_traffic', _('Balance the router\'s own traffic'),
			_('New connections the router itself opens are classified by the same rules and policies as LAN traffic.'));
		o.default = '1';

		o = s.option(form.DynamicList, 'lan', _('LAN devices'),
			_('Ingress devices whose new connections are balanced; default: every device that is not a WAN link.'));
		o.validate = common.device;
		o.placeholder = 'br-lan';

		o = s.option(form.Value, 'mark_mask', _('Mark mask'),
			_('The only fwmark/ctmark bits we ever touch; contiguous, at least 2 bits. The default leaves fw4, sqm (0xff) and pbr (0x00ff0000) their bits.'));
		o.placeholder = '0x3F00';
		o.validate = L.bind(common.markMask, o, uci.sections('connmark-lb', 'interface').length);

		o = s.option(form.Value, 'table_base', _('First routing table'),
			_('Link i routes through table table_base + i (256 or more, clear of the kernel\'s 253-255).'));
		o.placeholder = '4000';
		o.validate = common.int(256, 0x7fff0000);

		o = s.option(form.Value, 'priority_base', _('First rule priority'),
			_('Our ip rules use priorities priority_base .. priority_base + 511.'));
		o.placeholder = '4000';
		o.validate = common.int(1, 32766 - 512 - 1);

		return m.render();
	}
});
