"""Mako templates of the UI, adapted from Dozer 0.9's (public domain).

Kept as strings, not .mako files, so that a plain (non-editable) install carries them without
package-data configuration. Differences from Dozer's: every link is built from ``base`` (the
configured UI path) instead of a hard-coded /_profiler; the request's context (worker, pid,
method, path, status, duration) is shown on both pages; deletes are POST forms; output is
HTML-escaped by default (paths and headers come from clients); and no
``sys.setrecursionlimit(450)``, which Dozer's show page applies to the whole worker process.
"""

LAYOUT = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${self.title() | n} - wsgiprobe profiler</title>
<link href="${base}/media/css/profile.css" media="screen" rel="stylesheet" type="text/css">
<style>
body { text-align: left; padding: 9px 18px; }
h1 { margin-bottom: 9px; }
a:link, a:visited, form.inline button { color: #8ab4ff; }
form.inline { display: inline; margin: 0; }
form.inline button { text-decoration: underline; padding: 0; font-size: 12px; }
p.note { color: #aaa; }
#profile-list td.num { text-align: right; white-space: nowrap; }
table.context { margin-top: 9px; }
table.context th { text-align: right; }
</style>
</head>
<body>
${next.body() | n}
<script src="${base}/media/javascript/jquery-1.2.6.min.js"></script>
${self.javascript() | n}
</body>
</html>
<%def name="title()">Profiler</%def>
<%def name="javascript()"></%def>
"""

LIST_PROFILES = """\
<%inherit file="/layout.mako"/>
<%def name="title()">All profiles</%def>
<h1>All profiles</h1>
<p class="note">${len(rows)} kept, newest first. Bounds: ${max_profiles} profiles and
${max_mb} MB; the oldest go first.</p>
<p><form class="inline" method="post" action="${base}/delete">\
<button type="submit">Delete all</button></form></p>
<table id="profile-list">
    <tr>
        <th class="method">Method</th>
        <th class="url">URL</th>
        <th class="status">Status</th>
        <th class="duration">Duration</th>
        <th class="cost">Profiled</th>
        <th class="worker">Worker</th>
        <th class="process">PID</th>
        <th class="time">Time</th>
        <th class="pid">Profile ID</th>
        <th class="delete"></th>
    </tr>
    % for row in rows:
    <tr pid="${row['id']}">
        <td class="method">${row['method']}</td>
        <td class="url">${row['url']}</td>
        <td class="status num">${row['status']}</td>
        <td class="duration num">${row['duration']}</td>
        <td class="cost num">${row['cost']}</td>
        <td class="worker num">${row['worker']}</td>
        <td class="process num">${row['pid']}</td>
        <td class="time num" title="${row['saved_at']}">${row['age']}</td>
        <td class="pid"><a href="${base}/show/${row['id']}">${row['id']}</a></td>
        <td class="delete"><form class="inline" method="post" \
action="${base}/delete/${row['id']}"><button type="submit">delete</button></form></td>
    </tr>
    % endfor
</table>
% if errors:
<h2>Unreadable</h2>
<table id="profile-errors">
    % for age, error, profile_id in errors:
    <tr>
        <td class="error">${error}</td>
        <td class="time">${age}</td>
        <td class="pid">${profile_id}</td>
        <td class="delete"><form class="inline" method="post" \
action="${base}/delete/${profile_id}"><button type="submit">delete</button></form></td>
    </tr>
    % endfor
</table>
% endif
"""

SHOW_PROFILE = """\
<%inherit file="/layout.mako"/>
<%def name="title()">Profile ${id}</%def>
<div id="profiler">
    <h1>Viewing profile ID: ${id}</h1>
    <p><a href="${base}/showall">All profiles</a></p>

    <h2>Request</h2>
    <table class="context" id="context">
        % for label, value in request_rows:
        <tr><th>${label}</th><td class="${label.lower()}">${value}</td></tr>
        % endfor
    </table>

    <h2 onclick="$('#environment').toggle()" style="cursor: pointer">Environment (scrubbed)</h2>
    <table id="environment" style="display: none">
        % for key, value in sorted(environ.items()):
        <tr><th>${key}</th><td>${value}</td></tr>
        % endfor
    </table>

    <h2>Profile</h2>
    <div id="profile">\\
        <ul>
        % for node in profile:
        <%
            if "disable' of '_lsprof.Profiler" in node['function']:
                continue
        %>
        ${show_node(node, 0, node['cost']) | n}\\
        % endfor
        </ul>
    </div>
</div>

<%def name="show_node(node, depth, tottime, callcount=1)">
<%
    parent_id = next(ids)
    child_nodes = [x for x in node['calls'] if not x['builtin']]
    has_children = len(child_nodes) > 0
    if int(float(tottime)) == 0:
        proj_width = 1
    else:
        proj_width = int(400.0 / float(tottime) * float(node['cost']))
    where = '%s:%s' % (node['filename'], node.get('line_no', ''))
%>
% if has_children:
<li id="step_${parent_id}" class="step with-children">\\
% else:
<li id="step_${parent_id}" class="step">\\
% endif
<ul class="step-info">
<li class="title"><p><span class="time">${node['cost']}ms</span>
% if callcount > 1:
<span class="callcount">&#x2715;${callcount}</span>
% endif
% if has_children:
<a href="#" title="${where}" onclick="$('#children_step_${parent_id}').toggle();\\
$('#step_${parent_id}').toggleClass('opened');return false;">${node['func_name']}</a>\\
% else:
<span title="${where}">${node['func_name']}</span>\\
% endif
</p></li>
<li class="bar">
    <ul class="profile_bar">
        <li class="layer" style="width: ${proj_width}px;">&nbsp;</li>
    </ul>
    <br style="clear: left;" />
</li>
<li style="clear: left;"> </li>
</ul>\\
% if has_children:
<ul id="children_step_${parent_id}" class="profile_children"\\
% if proj_width < 200:
 style="display:none;"\\
% endif
>\\
% for called_node in sorted(node['calls'], key=lambda n: float(n['cost']), reverse=True):
<%
    called = profile_data.get(called_node['function'])
    if called is None or called_node['builtin'] or depth >= 20:
        continue
%>
${show_node(called, depth + 1, tottime, called_node['callcount']) | n}\\
% endfor
<li style="clear: left;"> </li>
</ul>
</li>
% endif
</%def>
"""
