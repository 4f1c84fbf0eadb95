'use strict';
'require baseclass';
'require form';
'require rpc';
'require uci';
'require view';

/*
 * What every connmark-lb page shares: the ubus calls of the daemon's
 * `connmark-lb` object and validators that accept exactly what the binary's
 * config reader (src/config) accepts, with its wording, so a value the
 * daemon would refuse is refused in the form already.
 */

/* An unsigned integer as the binary reads it: decimal, or hex with 0x. */
function parseU32(text) {
	var m, n;
	text = String(text);
	if ((m = /^0[xX]\+?([0-9a-fA-F]+)$/.exec(text)) != null)
		n = parseInt(m[1], 16);
	else if (/^\+?[0-9]+$/.test(text))
		n = parseInt(text, 10);
	else
		return null;
	return (n <= 0xffffffff) ? n : null;
}

/* Seconds as N or N.F (up to 9 decimals), greater than 0 and at most 3600. */
function parseSeconds(text) {
	var m = /^([0-9]+)(?:\.([0-9]{1,9}))?$/.exec(String(text));
	if (m == null)
		return null;
	var v = parseInt(m[1], 10) + (m[2] ? parseInt(m[2], 10) / Math.pow(10, m[2].length) : 0);
	return (v > 0 && v <= 3600) ? v : null;
}

/* A dotted quad without leading zeros, as Rust's Ipv4Addr parser wants it. */
function isIPv4(text) {
	var parts = String(text).split('.');
	return parts.length == 4 && parts.every(function(p) {
		return /^(0|[1-9][0-9]{0,2})$/.test(p) && +p <= 255;
	});
}

function isCidr4(text) {
	var parts = String(text).split('/');
	if (parts.length > 2 || !isIPv4(parts[0]))
		return false;
	return parts.length == 1 || (/^\+?[0-9]+$/.test(parts[1]) && +parts[1] <= 32);
}

function isIPv6(text) {
	var t = String(text);
	if (!/^[0-9a-fA-F:.]+$/.test(t) || t.indexOf(':') < 0)
		return false;
	var halves = t.split('::');
	if (halves.length > 2)
		return false;
	var groups = function(h) { return h == '' ? [] : h.split(':'); };
	var all = groups(halves[0]).concat(halves.length == 2 ? groups(halves[1]) : []);
	var words = 0;
	for (var i = 0; i < all.length; i++) {
		if (i == all.length - 1 && all[i].indexOf('.') >= 0) {
			if (!isIPv4(all[i])) return false;
			words += 2;
		}
		else if (/^[0-9a-fA-F]{1,4}$/.test(all[i])) words++;
		else return false;
	}
	return halves.length == 2 ? words < 8 : words == 8;
}

function isCidr6(text) {
	var parts = String(text).split('/');
	if (parts.length > 2 || !isIPv6(parts[0]))
		return false;
	return parts.length == 1 || (/^[0-9]+$/.test(parts[1]) && +parts[1] <= 128);
}

var callStatus = rpc.declare({ object: 'connmark-lb', method: 'status' });
var callReload = rpc.declare({ object: 'connmark-lb', method: 'reload' });
var callCheck = rpc.declare({ object: 'connmark-lb', method: 'check' });
var callExplain = rpc.declare({
	object: 'connmark-lb',
	method: 'explain',
	params: [ 'source', 'destination', 'protocol', 'port' ]
});

/* A form page over our UCI package: loads it first, so choices can list its sections. */
var ConfigView = view.extend({
	load: function() {
		return uci.load('connmark-lb');
	}
});

return baseclass.extend({
	ConfigView: ConfigView,
	callStatus: callStatus,
	callReload: callReload,
	callCheck: callCheck,
	callExplain: callExplain,
	parseU32: parseU32,
	parseSeconds: parseSeconds,
	isIPv4: isIPv4,

	/* A table of the named sections of `type` (other sections refer to them by name),
	 * each edited in a dialog. */
	grid: function(m, type, title, addTitle) {
		var s = m.section(form.GridSection, type, title);
		s.addremove = true;
		s.anonymous = false;
		s.nodescriptions = true;
		s.addbtntitle = addTitle;
		return s;
	},

	/* A text option of tab `tab` (null: no tabs) shown in the dialog only: its help,
	 * the binary's default as placeholder, its validator. */
	value: function(s, tab, name, title, help, placeholder, validate) {
		var o = tab ? s.taboption(tab, form.Value, name, title, help)
			: s.option(form.Value, name, title, help);
		o.placeholder = placeholder;
		o.validate = validate;
		o.modalonly = true;
		return o;
	},

	/* `balance` and, for hash, its `hash` key; `inherit` labels the empty choice (a policy
	 * without its own balance takes the global one). Returns both options. */
	balance: function(s, help, inherit) {
		var balance = s.option(form.ListValue, 'balance', _('Balance'), help);
		if (inherit)
			balance.value('', inherit);
		else
			balance.default = 'round-robin';
		balance.value('round-robin', _('round-robin (exact weighted rotation)'));
		balance.value('random', _('random (weighted)'));
		balance.value('hash', _('hash (resilient, by address)'));
		var hash = s.option(form.ListValue, 'hash', _('Hash key'), _('What the hash is computed over.'));
		hash.value('src', _('source address'));
		hash.value('src dst', _('source and destination address'));
		hash.default = 'src';
		hash.depends('balance', 'hash');
		return [ balance, hash ];
	},

	/* Validator of an integer option: min..max, the binary's message otherwise. */
	int: function(min, max) {
		return function(section_id, value) {
			if (value == null || value === '')
				return true;
			var n = parseU32(value);
			return (n != null && n >= min && n <= max) ? true
				: _('expected an integer %d..%d, got "%s"').format(min, max, value);
		};
	},

	seconds: function(section_id, value) {
		if (value == null || value === '' || parseSeconds(value) != null)
			return true;
		return _('expected seconds greater than 0 and at most 3600 (like 1 or 0.5), got "%s"').format(value);
	},

	/* The address family of an IP address or prefix, or null. */
	family: function(text) {
		return isCidr4(text) ? 'ipv4' : isCidr6(text) ? 'ipv6' : null;
	},

	/* An address of the interface's family (option family, ipv4 by default); with
	 * globalOnly, IPv6 link-local addresses are refused (a SNAT source must be global). */
	addressOfFamily: function(globalOnly) {
		return function(section_id, value) {
			if (value == null || value === '')
				return true;
			var family = this.section.formvalue(section_id, 'family') || 'ipv4';
			var ok = family == 'ipv6' ? isIPv6(value) : isIPv4(value);
			if (!ok)
				return _('expected an %s address, got "%s"').format(family == 'ipv6' ? 'IPv6' : 'IPv4', value);
			if (globalOnly && family == 'ipv6' && /^fe[89ab]/i.test(value))
				return _('expected a global address, got the link-local %s').format(value);
			return true;
		};
	},

	/* An address (any family), for the Explain page. */
	address: function(section_id, value) {
		if (value == null || value === '' || isIPv4(value) || isIPv6(value))
			return true;
		return _('expected an IP address, got "%s"').format(value);
	},

	/* Rule addresses: IPv4, or IPv6 for rules of that family. */
	prefix: function(section_id, value) {
		if (value == null || value === '' || isCidr4(value) || isCidr6(value))
			return true;
		return _('expected an IP address or prefix, got "%s"').format(value);
	},

	prefix6: function(section_id, value) {
		if (value == null || value === '' || isCidr6(value))
			return true;
		return _('expected an IPv6 prefix like 2001:db8:1::/56, got "%s"').format(value);
	},

	/* Quality thresholds: milliseconds 1..60000 or percent 0..100, the recovery one at
	 * most the failure one (the binary's defaults when unset). */
	threshold: function(option) {
		var loss = /loss$/.test(option);
		var range = loss ? [ 0, 100 ] : [ 1, 60000 ];
		var defaults = loss ? { failure: 40, recovery: 10 } : { failure: 1000, recovery: 500 };
		var kind = loss ? 'loss' : 'latency';
		var self = this;
		return function(section_id, value) {
			var r = self.int(range[0], range[1])(section_id, value);
			if (r !== true)
				return r;
			var get = function(which) {
				var v = this.section.formvalue(section_id, which + '_' + kind);
				return (v == null || v === '') ? defaults[which] : parseU32(v);
			}.bind(this);
			var failure = get('failure'), recovery = get('recovery');
			if (failure == null || recovery == null || recovery <= failure)
				return true;
			return loss
				? _('expected at most failure_loss (%d%%), got %d').format(failure, recovery)
				: _('expected at most failure_latency (%d ms), got %d').format(failure, recovery);
		};
	},

	/* A list option's value given twice. */
	twice: function(option, section_id, value) {
		var all = L.toArray(option.formvalue(section_id));
		return all.filter(function(v) { return v == value; }).length > 1
			? _('%s is listed twice').format(value) : true;
	},

	device: function(section_id, value) {
		if (value == null || value === '')
			return true;
		var v = String(value);
		if (v.length <= 15 && v != '.' && v != '..' && /^[A-Za-z0-9_.@-]+$/.test(v))
			return true;
		return _('expected a device name of 1..15 characters [A-Za-z0-9_.@-], got "%s"').format(value);
	},

	/* Section, netifd interface and set names: they become chain names. */
	name: function(section_id, value) {
		if (value == null || value === '' || /^[A-Za-z0-9_]{1,64}$/.test(value))
			return true;
		return _('expected a name of letters, digits and _ (1..64 characters), got "%s"').format(value);
	},

	ports: function(section_id, value) {
		if (value == null || value === '')
			return true;
		var ok = String(value).split(',').every(function(part) {
			var m = /^([0-9]+)(?:[-:]([0-9]+))?$/.exec(part);
			if (m == null)
				return false;
			var from = +m[1], to = m[2] != null ? +m[2] : from;
			return from >= 1 && from <= to && to <= 65535;
		});
		return ok ? true : _('expected ports like 443, 8000-8080 or 80,443, got "%s"').format(value);
	},

	proto: function(section_id, value) {
		if (value == null || value === '' || /^(all|tcp|udp|icmp)$/.test(value))
			return true;
		var n = /^\+?[0-9]+$/.test(value) ? +value : -1;
		return (n >= 0 && n <= 255) ? true
			: _('expected all|tcp|udp|icmp or a protocol number, got "%s"').format(value);
	},

	/* mark_mask: contiguous, at least 2 bits, and room for a mark per interface section
	 * (two values are reserved, at most 250 links). */
	markMask: function(interfaces, section_id, value) {
		if (value == null || value === '')
			return true;
		var n = parseU32(value);
		if (n == null || n < 1)
			return _('expected an integer %d..%d, got "%s"').format(1, 0xffffffff, value);
		while ((n & 1) == 0)
			n = n >>> 1;
		if (n < 3 || ((n + 1) & n) != 0)
			return _('expected a contiguous bit mask of at least 2 bits, got %s').format(value);
		var capacity = Math.min(n - 2, 250);
		if (interfaces > capacity)
			return _('%s can number %d links (2 values are reserved), but %d interface sections are configured')
				.format(value, capacity, interfaces);
		return true;
	},

	/* Badge colour of a link state. */
	stateColour: function(state) {
		return {
			up: '#2e7d32', failing: '#ef6c00', down: '#c62828', recovering: '#1565c0'
		}[state] || '#616161';
	},

	/* "2 min 10 s", "3 h 5 min", "4 d 2 h": two units are enough to read. */
	duration: function(seconds) {
		var units = [ [ 86400, _('d') ], [ 3600, _('h') ], [ 60, _('min') ], [ 1, _('s') ] ];
		var s = Math.max(0, Math.floor(seconds)), i = 0, out = [];
		while (i < units.length - 1 && s < units[i][0])
			i++;
		for (var j = i; j < units.length && j < i + 2; j++) {
			var n = Math.floor(s / units[j][0]);
			s -= n * units[j][0];
			out.push('%d %s'.format(n, units[j][1]));
		}
		return out.join(' ');
	},

	/* Bytes per second as bit/s, the unit ISPs sell. */
	rate: function(bytesPerSecond) {
		var bits = bytesPerSecond * 8;
		var units = [ 'bit/s', 'kbit/s', 'Mbit/s', 'Gbit/s' ];
		var i = 0;
		while (bits >= 1000 && i < units.length - 1) {
			bits /= 1000;
			i++;
		}
		return bits.toFixed(i == 0 ? 0 : 1) + ' ' + units[i];
	}
});
