'use strict';
'require view';
'require ui';
'require dom';
'require connmark-lb.common as common';

/* `connmark-lb check` of the saved config, through the daemon's `check` method. */
return view.extend({
	handleSaveApply: null,
	handleSave: null,
	handleReset: null,

	load: function() {
		return this.check();
	},

	check: function() {
		return common.callCheck().then(function(r) {
			return r || { error: _('no answer') };
		}).catch(function(e) {
			return { error: e.message };
		});
	},

	result: function(r) {
		if (r.error)
			return E('div', { 'class': 'alert-message error', 'id': 'connmark-lb-check-error' }, [
				E('strong', {}, _('The connmark-lb daemon could not check the config: %s').format(r.error)), ' ',
				_('It checks only while it runs (/etc/init.d/connmark-lb start).')
			]);
		var list = function(items, cls, id) {
			return E('ul', { 'id': id }, (items || []).map(function(text) {
				return E('li', { 'class': cls }, text);
			}));
		};
		var errors = r.errors || [], warnings = r.warnings || [];
		return E('div', { 'id': 'connmark-lb-check', 'data-valid': r.valid ? '1' : '0' }, [
			E('div', { 'class': r.valid ? 'alert-message success' : 'alert-message error' }, r.valid
				? _('The saved config is valid: this is exactly what the daemon would load.')
				: _('The saved config has %d error(s); the daemon keeps its previous rules until they are fixed.').format(errors.length)),
			errors.length == 0 ? E('span') : E('div', {}, [
				E('h3', {}, _('Errors')),
				E('div', { 'style': 'color:#c62828;font-weight:bold' }, list(errors, 'connmark-lb-error', 'connmark-lb-errors'))
			]),
			warnings.length == 0 ? E('span') : E('div', {}, [
				E('h3', {}, _('Warnings')),
				E('div', { 'style': 'color:#ef6c00' }, list(warnings, 'connmark-lb-warning', 'connmark-lb-warnings'))
			]),
			r.output ? E('div', {}, [
				E('h3', {}, _('What would be loaded')),
				E('pre', { 'id': 'connmark-lb-output', 'style': 'white-space:pre;overflow:auto;max-height:40em' }, r.output)
			]) : E('span')
		]);
	},

	handleRecheck: function() {
		var body = document.getElementById('connmark-lb-check-body');
		var self = this;
		return this.check().then(function(r) { dom.content(body, self.result(r)); });
	},

	render: function(r) {
		return E('div', {}, [
			E('h2', {}, _('Check the configuration')),
			E('div', { 'class': 'cbi-map-descr' },
				_('Validates the saved /etc/config/connmark-lb as the daemon reads it and shows the firewall rules, routes and settings it would load, without touching anything.')),
			E('div', { 'class': 'cbi-section' }, [
				E('button', { 'class': 'cbi-button cbi-button-action', 'click': ui.createHandlerFn(this, 'handleRecheck') },
					_('Check again')),
				E('div', { 'id': 'connmark-lb-check-body' }, this.result(r))
			])
		]);
	}
});
