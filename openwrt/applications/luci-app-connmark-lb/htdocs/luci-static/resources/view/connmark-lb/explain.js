'use strict';
'require view';
'require ui';
'require dom';
'require connmark-lb.common as common';

/*
 * "Which link would this take?": the daemon's `explain` answer (the JSON of
 * `connmark-lb explain --json`) drawn as rule -> policy -> link.
 */

var decisions = {
	balanced: _('balanced by weight'),
	sticky: _('sticky: the link this source already uses'),
	hashed: _('hashed by address'),
	pinned: _('pinned: this is the only link it can take'),
	unreachable: _('unreachable: refused at once'),
	main: _('not balanced: main routing table'),
	'default': _('no rule matched: main routing table')
};

function step(label, value, id) {
	return E('div', { 'class': 'connmark-lb-step', 'id': id,
		'style': 'display:inline-block;border:1px solid #999;border-radius:.4em;padding:.4em .8em;margin:.2em' }, [
		E('small', {}, label), E('br'), E('strong', {}, value == null ? '\u2014' : String(value))
	]);
}

return view.extend({
	handleSaveApply: null,
	handleSave: null,
	handleReset: null,

	answer: function(r) {
		var arrow = function() { return E('span', { 'style': 'margin:0 .4em' }, '\u2192'); };
		var link = r.interface == null ? null
			: r.device ? '%s (%s)'.format(r.interface, r.device) : r.interface;
		var members = (r.members || []).map(function(m) {
			return E('tr', { 'class': 'tr' }, [
				E('td', { 'class': 'td' }, m.member),
				E('td', { 'class': 'td' }, m.interface),
				E('td', { 'class': 'td' }, String(m.metric)),
				E('td', { 'class': 'td' }, String(m.weight)),
				E('td', { 'class': 'td' }, E('span', {
					'style': 'color:' + common.stateColour(m.live ? 'up' : 'down')
				}, m.live ? _('live') : _('not live')))
			]);
		});
		return E('div', {
			'id': 'connmark-lb-answer', 'data-decision': r.decision,
			'data-interface': r.interface == null ? '' : r.interface,
			'data-source-address': r.source_address == null ? '' : r.source_address
		}, [
			E('p', {}, [
				'%s \u2192 %s'.format(r.source, r.destination),
				r.protocol ? ' %s'.format(r.protocol) : '', r.port != null ? ' %s %d'.format(_('port'), r.port) : ''
			]),
			E('div', {}, [
				step(_('Rule'), r.rule || _('none matched'), 'connmark-lb-rule'), arrow(),
				step(_('Policy'), r.policy, 'connmark-lb-policy'), arrow(),
				step(_('Link'), link, 'connmark-lb-link'), arrow(),
				step(_('Source address'), r.source_address, 'connmark-lb-source')
			]),
			E('p', {}, [ E('strong', {}, decisions[r.decision] || r.decision),
				r.bucket != null ? ' (%s %d)'.format(_('bucket'), r.bucket) : '' ]),
			E('p', { 'id': 'connmark-lb-reason' }, r.reason),
			members.length == 0 ? E('span') : E('table', { 'class': 'table' }, [
				E('tr', { 'class': 'tr table-titles' }, [ _('Member'), _('Interface'), _('Metric'), _('Weight'), _('Live') ]
					.map(function(t) { return E('th', { 'class': 'th' }, t); }))
			].concat(members))
		]);
	},

	handleExplain: function(ev) {
		var field = function(id) { return document.getElementById(id).value.trim(); };
		var src = field('connmark-lb-src'), dst = field('connmark-lb-dst');
		var proto = field('connmark-lb-proto'), port = field('connmark-lb-port');
		var out = document.getElementById('connmark-lb-result');
		var bad = [ [ src, _('Source') ], [ dst, _('Destination') ] ].filter(function(f) {
			return common.address(null, f[0]) !== true || f[0] === '';
		});
		if (bad.length > 0)
			return dom.content(out, E('p', { 'class': 'alert-message warning' },
				_('%s: expected an IP address').format(bad[0][1])));
		if (port !== '' && (!/^[0-9]+$/.test(port) || +port < 1 || +port > 65535))
			return dom.content(out, E('p', { 'class': 'alert-message warning' },
				_('Port: expected 1..65535')));
		dom.content(out, E('p', { 'class': 'spinning' }, _('Asking the daemon…')));
		var self = this;
		return common.callExplain(src, dst, proto || null, port === '' ? null : +port).then(function(r) {
			if (r == null || r.error)
				throw new Error(r ? r.error : _('no answer'));
			dom.content(out, self.answer(r));
		}).catch(function(e) {
			dom.content(out, E('p', { 'class': 'alert-message error', 'id': 'connmark-lb-error' },
				_('The daemon could not answer: %s').format(e.message)));
		});
	},

	render: function() {
		var input = function(id, label, placeholder) {
			return E('div', { 'class': 'cbi-value' }, [
				E('label', { 'class': 'cbi-value-title', 'for': id }, label),
				E('div', { 'class': 'cbi-value-field' },
					E('input', { 'id': id, 'type': 'text', 'class': 'cbi-input-text', 'placeholder': placeholder }))
			]);
		};
		return E('div', {}, [
			E('h2', {}, _('Which link would this take?')),
			E('div', { 'class': 'cbi-map-descr' },
				_('Describe a new connection; the daemon answers from its live state which rule and policy it matches and which link and source address it would leave with. Nothing is changed.')),
			E('div', { 'class': 'cbi-section' }, [
				input('connmark-lb-src', _('Source'), '192.168.1.10'),
				input('connmark-lb-dst', _('Destination'), '203.0.113.5'),
				E('div', { 'class': 'cbi-value' }, [
					E('label', { 'class': 'cbi-value-title', 'for': 'connmark-lb-proto' }, _('Protocol')),
					E('div', { 'class': 'cbi-value-field' }, E('select', { 'id': 'connmark-lb-proto', 'class': 'cbi-input-select' }, [
						E('option', { 'value': '' }, _('any')),
						E('option', { 'value': 'tcp' }, 'tcp'),
						E('option', { 'value': 'udp' }, 'udp'),
						E('option', { 'value': 'icmp' }, 'icmp')
					]))
				]),
				input('connmark-lb-port', _('Destination port'), '443'),
				E('div', { 'class': 'cbi-value' }, [
					E('div', { 'class': 'cbi-value-field' }, E('button', {
						'class': 'cbi-button cbi-button-action', 'id': 'connmark-lb-explain',
						'click': ui.createHandlerFn(this, 'handleExplain')
					}, _('Explain')))
				])
			]),
			E('div', { 'class': 'cbi-section', 'id': 'connmark-lb-result' })
		]);
	}
});
