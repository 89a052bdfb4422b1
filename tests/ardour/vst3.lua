-- Put the SA3 VST3 on a track of a saved session and drive it through its parameters, headless:
-- roll the transport once over the song with Capture armed (the plugin learns where the bars fall,
-- across the tempo and meter changes, and captures its range), stop, then raise Run in "Generate loop"
-- mode and wait for the result file. The session is saved with the plugin, whose state names the
-- result, for `ardour7-export` to render. Usage: ardour7-lua vst3.lua PARAMS.lua
local P = dofile(arg[1])
AudioEngine:set_backend("None (Dummy)", "", "")
assert(load_session(P.folder, P.name), "could not load the session")
local proc = ARDOUR.LuaAPI.new_plugin(Session, "SA3", ARDOUR.PluginType.VST3, "")
assert(not proc:isnil(), "Ardour does not know the SA3 VST3 (run ardour-vst3-scanner on it first)")
local track = Session:route_by_name(P.track)
assert(track and track:add_processor_by_index(proc, 0, nil, true) == 0, "could not add the plugin to " .. P.track)
local plugin = proc:to_insert():plugin(0)
local index = {}
for i = 0, plugin:parameter_count() - 1 do index[plugin:parameter_label(i)] = i end

-- VST3 parameters are normalised (0..1); P.params holds {name, value} pairs in that order
local function set(params)
	for _, p in ipairs(params) do
		assert(index[p[1]], "no parameter " .. p[1])
		assert(ARDOUR.LuaAPI.set_processor_param(proc, index[p[1]], p[2]), "could not set " .. p[1])
	end
end
local function sleep(seconds) ARDOUR.LuaAPI.usleep(math.floor(seconds * 1e6)) end

set(P.capture)
Session:request_locate(0, false, ARDOUR.LocateTransportDisposition.MustStop, ARDOUR.TransportRequestSource.TRS_UI)
sleep(0.5)
Session:request_roll(ARDOUR.TransportRequestSource.TRS_UI)
local deadline = os.time() + P.wait_s  -- an upper bound for a loaded machine, never a timing check
while Session:transport_sample() < P.roll_to and os.time() < deadline do sleep(0.1) end
Session:request_stop(false, false, ARDOUR.TransportRequestSource.TRS_UI)
print("ROLLED " .. Session:transport_sample())
sleep(0.5)
-- a snapshot (the session stays current) whose plugin state holds the status after the capture
print("SNAPSHOT " .. tostring(Session:save_state(P.captured_snapshot, false, false, false, false, false)))

set(P.run)
local function exists(path) local f = io.open(path, "r"); if f then f:close() end; return f ~= nil end
while not exists(P.expect_sidecar) and os.time() < deadline do sleep(0.2) end
sleep(0.5)  -- the WAV is placed before its sidecar; let the status line settle
set(P.after)
sleep(0.2)
print("SAVED " .. tostring(Session:save_state("", false, false, false, false, false)))
close_session()
