-- SA3 for Ardour: what the editor actions share. Reads the session through Ardour's Lua API (rate,
-- tempo map, meters, end marker, regions), asks the JSON host bridge (`sa3 host`, docs/host-bridge.md)
-- and imports its results. `sa3 ardour install` fills in @COMMAND@ and inlines this file into each
-- action; the headless tests load it with dofile. Returns the SA3 table.

local SA3 = {}
SA3.command = "@COMMAND@" -- how to run `sa3` (shell words, already quoted)
SA3.model = "@MODEL@"

-- -- JSON out (requests); replies come back as a Lua chunk (`sa3 host --reply x.lua`) -------------

local function json(value)
	local kind = type(value)
	if kind == "nil" then return "null" end
	if kind == "boolean" then return tostring(value) end
	if kind == "number" then
		if math.type(value) == "integer" then return string.format("%d", value) end
		return string.format("%.17g", value)
	end
	if kind == "string" then
		return '"' .. value:gsub('[%c"\\]', function (c)
			return string.format("\\u%04x", c:byte())
		end) .. '"'
	end
	local parts = {}
	if #value > 0 then
		for _, v in ipairs(value) do parts[#parts + 1] = json(v) end
		return "[" .. table.concat(parts, ",") .. "]"
	end
	for k, v in pairs(value) do parts[#parts + 1] = json(tostring(k)) .. ":" .. json(v) end
	return "{" .. table.concat(parts, ",") .. "}"
end
SA3.json = json

local function shell_quote(text)
	return "'" .. tostring(text):gsub("'", "'\\''") .. "'"
end

-- -- the session ---------------------------------------------------------------------------------

local function quarter(ticks)
	return string.format("%d/%d", ticks, Temporal.ticks_per_beat)
end

-- Tempo and meter changes up to `until_sample`, walked at sixteenth notes (the Lua API has no list of
-- them). Each tempo change carries the sample where Ardour puts it, so the bridge refuses a map this
-- walk got wrong (two changes within a sixteenth, or a ramp) instead of placing clips off the grid.
function SA3.tempo_map(until_sample)
	local rate = Session:nominal_sample_rate()
	local tm = Temporal.TempoMap.read()
	local last = Temporal.timepos_t(until_sample):ticks() + Temporal.ticks_per_beat
	local tempos, meters, seen_tempo, seen_meter = {}, {}, {}, {}
	for ticks = 0, last, Temporal.ticks_per_beat // 4 do
		local pos = Temporal.timepos_t.from_ticks(ticks)
		local tempo = tm:tempo_at(pos)
		local at = tempo:time():ticks()
		if not seen_tempo[at] then
			seen_tempo[at] = true
			tempos[#tempos + 1] = { quarter = quarter(at), bpm = tempo:note_types_per_minute(),
				note_type = tempo:note_type(), sample = tempo:to_point():sample(rate) }
		end
		local meter = tm:meter_at(pos)
		at = meter:to_point():time():ticks()
		if not seen_meter[at] then
			seen_meter[at] = true
			meters[#meters + 1] = { quarter = quarter(at), numerator = meter:divisions_per_bar(),
				denominator = meter:note_value() }
		end
	end
	tm = nil
	return { tempos = tempos, meters = meters }
end

-- The region as the bridge's `clip`: one source file and channel per channel, its offset and length.
function SA3.clip(region)
	local channels = {}
	for i = 0, region:to_audioregion():n_channels() - 1 do
		local source = region:source(i):to_filesource()
		channels[#channels + 1] = { path = source:path(), channel = source:channel() }
	end
	return { channels = channels, position = region:position():samples(), length = region:length():samples(),
		offset = region:start():samples(), name = region:name() }
end

-- The track whose playlist holds `region`.
function SA3.track_of(region)
	for route in Session:get_tracks():iter() do
		local track = route:to_track()
		if not track:isnil() and not track:playlist():region_by_id(region:to_stateful():id()):isnil() then
			return track
		end
	end
	return nil
end

function SA3.track_named(name)
	local route = Session:route_by_name(name)
	if route:isnil() or route:to_track():isnil() then return nil end
	return route:to_track()
end

-- -- the bridge ----------------------------------------------------------------------------------

-- The request for `action` ("loop", "inpaint", "extend", "variation"); `o` holds track (name), region,
-- selection ({start, end} samples), position, bars, prompt, seed, init_noise_level, preset.
function SA3.request(action, o)
	local far = math.max(Session:current_end_sample(), o.position or 0)
	if o.selection then far = math.max(far, o.selection[2]) end
	local clip = o.region and SA3.clip(o.region) or nil
	if clip then far = math.max(far, clip.position + clip.length) end
	if action == "loop" then -- the loop's end is found by the bridge: walk a generous distance past it
		far = far + (o.bars or 4) * 16 * 60 * Session:nominal_sample_rate() // 20
	end
	local request = {
		sa3_host_bridge = 1, action = action, sample_rate = Session:nominal_sample_rate(),
		tempo_map = SA3.tempo_map(far), track = o.track, clip = clip,
		output_dir = o.output_dir or (Session:path():gsub("/$", "") .. "/sa3"), project = Session:name(),
		prompt = o.prompt or "", seed = o.seed or -1, bars = o.bars, preset = o.preset, daw = "ardour",
		init_noise_level = o.init_noise_level, steps = o.steps, position = o.position,
		engine = { model = SA3.model, connection_file = o.connection_file },
	}
	if o.selection then request.selection = { start = o.selection[1], ["end"] = o.selection[2] } end
	if action == "extend" then request.song_end = Session:current_end_sample() end
	request.cancel_file = request.output_dir .. "/cancel"
	return request
end

-- Run the bridge on `request`; returns the reply table. Progress lines are printed as they come.
function SA3.call(request)
	local dir = request.output_dir
	os.execute("mkdir -p " .. shell_quote(dir))
	os.remove(request.cancel_file)
	local stamp = string.format("%d-%d", os.time(), math.random(1, 1000000))
	local path, reply_path = dir .. "/request-" .. stamp .. ".json", dir .. "/reply-" .. stamp .. ".lua"
	local file = assert(io.open(path, "w"))
	file:write(json(request))
	file:close()
	local pipe = assert(io.popen(SA3.command .. " host " .. shell_quote(path) .. " --reply "
		.. shell_quote(reply_path) .. " 2>&1"))
	for line in pipe:lines() do
		local i, n = line:match('"i": (%d+), "n": (%d+)')
		if i then print(string.format("SA3: step %s/%s", i, n)) elseif not line:match('^{"event": "reply"') then print(line) end
	end
	pipe:close()
	local chunk = loadfile(reply_path, "t", {})
	if not chunk then
		return { ok = false, error = { message = "sa3 host gave no reply; is `sa3` installed? (" .. SA3.command .. ")" } }
	end
	return chunk()
end

-- The reply's error in one line, for a dialog.
function SA3.error_text(reply)
	local e = reply.error or {}
	return (e.field and (e.field .. ": ") or "") .. (e.message or "unknown error")
end

-- -- placing results (GUI only: the Editor object exists only there) -----------------------------

-- Import each result at its exact sample on `track`: a take lands as a new layer above its source
-- (the source stays in the playlist), a continuation right after it, a loop where it starts.
function SA3.import(reply, track)
	for _, result in ipairs(reply.results) do
		local files = C.StringVector()
		files:push_back(result.path)
		local pos = Temporal.timepos_t(result.position)
		Editor:do_import(files, Editing.ImportDistinctFiles, Editing.ImportToTrack, ARDOUR.SrcQuality.SrcBest,
			ARDOUR.MidiTrackNameSource.SMFTrackName, ARDOUR.MidiTempoMapDisposition.SMFTempoIgnore,
			pos, ARDOUR.PluginInfo(), track, false)
		local placed = nil
		for region in track:playlist():regions_at(Temporal.timepos_t(result.position)):iter() do
			if region:position():samples() == result.position and region:length():samples() == result.length then
				placed = region
			end
		end
		if placed then
			placed:raise_to_top()
		else
			print("SA3: could not find the imported region of " .. result.path .. " at sample " .. result.position)
		end
	end
end

-- One editor action: build the request, run it, import, or show why not.
function SA3.run(action, o)
	local reply = SA3.call(SA3.request(action, o))
	if not reply.ok then
		LuaDialog.Message("SA3", SA3.error_text(reply), LuaDialog.MessageType.Error, LuaDialog.ButtonType.Close):run()
		return reply
	end
	SA3.import(reply, o.track_object)
	return reply
end

-- What the producer selected: the first selected region (and its track), the time range, the playhead.
function SA3.selection()
	local sel = Editor:get_selection()
	local out = { position = Session:transport_sample() }
	for region in sel.regions:regionlist():iter() do
		out.region = region
		break
	end
	if sel.time:start_sample() < sel.time:end_sample() then
		out.selection = { sel.time:start_sample(), sel.time:end_sample() }
	end
	if out.region then
		out.track_object = SA3.track_of(out.region)
	else
		for route in sel.tracks:routelist():iter() do
			if not route:to_track():isnil() then out.track_object = route:to_track() break end
		end
	end
	if out.track_object then out.track = out.track_object:name() end
	return out
end

-- Ask for the prompt (and what else the action needs) in a dialog; nil when cancelled.
function SA3.ask(title, extra)
	local fields = { { type = "entry", key = "prompt", default = "", title = "Prompt" } }
	for _, field in ipairs(extra or {}) do fields[#fields + 1] = field end
	fields[#fields + 1] = { type = "number", key = "seed", title = "Seed (-1: random)", min = -1, max = 2147483647, step = 1, digits = 0, default = -1 }
	return LuaDialog.Dialog(title, fields):run()
end

-- One editor action: `need(o)` returns what is missing from the selection (or nil, and may adjust
-- it), the dialog asks for the prompt, seed and `fields`, `apply(o, answers)` takes the extra answers.
function SA3.editor_action(action, title, need, fields, apply)
	local o = SA3.selection()
	local missing = need(o)
	if missing then
		LuaDialog.Message(title, missing, LuaDialog.MessageType.Info, LuaDialog.ButtonType.Close):run()
		return
	end
	local answers = SA3.ask(title, fields)
	if not answers then return end
	o.prompt, o.seed = answers.prompt, math.floor(answers.seed)
	if apply then apply(o, answers) end
	SA3.run(action, o)
end

return SA3
