'use strict';
'require view';
'require poll';
'require uci';
'require dom';
'require connmark-lb.common as common';

/*
 * Live view of the daemon: one row per link from `ubus call connmark-lb status`.
 * Shares of new connections and throughput come from the difference between
 * two successive replies (counters since the last apply, device byte counters).
 */

function loadAll() {
	uci.unload('connmark-lb');
	return Promise.all([
		L.resolveDefault(common.callStatus(), null),
		L.resolveDefault(uci.load('connmark-lb'), null)
	]);
}

return view.extend({
	handleSaveApply: null,
	handleSave: null,
	handleReset: null,

	load: function() {
		return loadAll();
	},

	/* Turns two replies into per-link share and rates; null fields until there are two. */
	figures: function(status) {
		var now = performance.now() / 1000, prev = this.previous, out = {};
		var links = (status && Array.isArray(status.links)) ? status.links : [];
		var delta = function(l, key) {
			var before = prev && prev.links[l.interface];
			return (before && l[key] != null && before[key] != null && l[key] >= before[key])
				? l[key] - before[key] : null;
		};
		var newTotal = 0, cumTotal = 0;
		links.forEach(function(l) {
			newTotal += delta(l, 'new_connections') || 0;
			cumTotal += l.new_connections || 0;
		});
		links.forEach(function(l) {
			var dn = delta(l, 'new_connections'), seconds = prev ? now - prev.time : 0;
			var rx = delta(l, 'rx_bytes'), tx = delta(l, 'tx_bytes');
			out[l.interface] = {
				share: newTotal > 0 ? (dn || 0) / newTotal : null,
				shareSinceApply: cumTotal > 0 ? (l.new_connections || 0) / cumTotal : null,
				rx: (rx != null && seconds > 0) ? rx / seconds : null,
				tx: (tx != null && seconds > 0) ? tx / seconds : null
			};
		});
		var byName = {};
		links.forEach(function(l) { byName[l.interface] = l; });
		this.previous = { time: now, links: byName };
		return out;
	},

	banner: function(status) {
		if (uci.get('connmark-lb', 'globals', 'enabled') == '0')
			return E('div', { 'class': 'alert-message warning', 'id': 'connmark-lb-banner' }, [
				E('strong', {}, _('connmark-lb is disabled.')), ' ',
				_('No rules are applied: switch it on under Global settings, then Save & Apply.')
			]);
		if (status == null)
			return E('div', { 'class': 'alert-message error', 'id': 'connmark-lb-banner' }, [
				E('strong', {}, _('The connmark-lb daemon is not running.')), ' ',
				_('Start it with /etc/init.d/connmark-lb start, and see the system log (logread -e connmark-lb) for why it stopped.')
			]);
		return E('div', { 'id': 'connmark-lb-banner' });
	},

	linkRow: function(l, f, now) {
		var colour = common.stateColour(l.state);
		/* The mean over the daemon's recent rounds where it reports one, else the last round. */
		var rtt = l.window_rtt_us != null ? l.window_rtt_us : l.rtt_us;
		var loss = l.window_loss_percent != null ? l.window_loss_percent : l.loss_percent;
		var pct = function(v) { return v == null ? '-' : '%.1f %%'.format(v * 100); };
		var share = f.share != null ? pct(f.share)
			: E('span', { 'title': _('No new connections since the last refresh: share since the last apply') },
				[ pct(f.shareSinceApply) ]);
		return E('tr', { 'class': 'tr', 'data-interface': l.interface, 'data-state': l.state }, [
			E('td', { 'class': 'td', 'data-title': _('Interface') }, [
				E('strong', {}, l.interface), E('br'), E('small', {}, l.device || _('no device'))
			]),
			E('td', { 'class': 'td', 'data-title': _('State') }, [
				E('span', {
					'class': 'connmark-lb-state',
					'style': 'display:inline-block;padding:.1em .6em;border-radius:.8em;color:#fff;background:' + colour
				}, l.state),
				' ', E('small', {}, l.usable ? _('in use') : _('not used'))
			]),
			E('td', { 'class': 'td', 'data-title': _('Last change') },
				'%s %s'.format(l.state, _('for %s').format(common.duration(now - l.last_change)))),
			E('td', { 'class': 'td', 'data-title': _('Tracked') }, l.tracked ? _('yes') : _('no')),
			E('td', { 'class': 'td', 'data-title': _('RTT') }, rtt != null ? '%.1f ms'.format(rtt / 1000) : '-'),
			E('td', { 'class': 'td', 'data-title': _('Loss') }, loss != null ? '%d %%'.format(loss) : '-'),
			E('td', { 'class': 'td', 'data-title': _('New connections'), 'data-share': f.share }, share),
			E('td', { 'class': 'td', 'data-title': _('Receive'), 'data-rate': f.rx },
				f.rx != null ? common.rate(f.rx) : '-'),
			E('td', { 'class': 'td', 'data-title': _('Transmit'), 'data-rate': f.tx },
				f.tx != null ? common.rate(f.tx) : '-')
		]);
	},

	content: function(status) {
		var figures = this.figures(status);
		var now = (status && status.now) ? status.now : Date.now() / 1000;
		var rows = (status && Array.isArray(status.links)) ? status.links : [];
		var self = this;
		var table = E('table', { 'class': 'table', 'id': 'connmark-lb-links' }, [
			E('tr', { 'class': 'tr table-titles' }, [
				_('Interface'), _('State'), _('Last change'), _('Tracked'), _('RTT (recent rounds)'), _('Loss (recent rounds)'),
				_('New connections'), _('Receive'), _('Transmit')
			].map(function(t) { return E('th', { 'class': 'th' }, t); }))
		].concat(rows.map(function(l) { return self.linkRow(l, figures[l.interface] || {}, now); })));
		if (status != null && rows.length == 0)
			table.appendChild(E('tr', { 'class': 'tr placeholder' }, [
				E('td', { 'class': 'td' }, E('em', {}, _('No enabled interface.')))
			]));
		return E('div', {}, [
			this.banner(status),
			E('div', { 'class': 'cbi-section' }, [
				E('p', { 'id': 'connmark-lb-daemon' }, status == null ? '' : [
					_('Backend'), ': ', E('strong', {}, status.backend || '-'), ' \u00b7 ',
					_('Daemon PID'), ': ', E('strong', {}, String(status.pid)), ' \u00b7 ',
					E('small', {}, _('refreshed %s').format(new Date().toLocaleTimeString()))
				]),
				table
			])
		]);
	},

	render: function(data) {
		var body = E('div', { 'id': 'connmark-lb-status' }, this.content(data[0]));
		var self = this;
		poll.add(function() {
			return loadAll().then(function(fresh) {
				dom.content(body, self.content(fresh[0]));
			});
		}, 3);
		return E('div', {}, [
			E('h2', {}, _('Multi-WAN status')),
			E('div', { 'class': 'cbi-map-descr' },
				_('Every link as the connmark-lb daemon sees it, refreshed every 3 seconds.')),
			body
		]);
	}
});
