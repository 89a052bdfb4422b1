-- Run one SA3 action on a saved session headless, through the same library the editor actions use
-- (the selection comes from PARAMS instead of the editor). Prints one RESULT line per result.
-- Usage: ardour7-lua drive.lua PARAMS.lua
local P = dofile(arg[1])
local SA3 = dofile(P.library)
AudioEngine:set_backend("None (Dummy)", "", "")
assert(load_session(P.folder, P.name), "could not load the session")
local track = SA3.track_named(P.track)
assert(track, "no track " .. P.track)
local o = { track = P.track, selection = P.selection, position = P.position, bars = P.bars, prompt = P.prompt,
	seed = P.seed, steps = P.steps, init_noise_level = P.init_noise_level, output_dir = P.output_dir,
	connection_file = P.connection_file }
if P.region then
	for region in track:playlist():region_list():iter() do
		if region:name() == P.region then o.region = region end
	end
	assert(o.region, "no region " .. P.region)
	assert(SA3.track_of(o.region):name() == P.track)
end
local request = SA3.request(P.action, o)
local reply = SA3.call(request)
if not reply.ok then
	print("ERROR " .. SA3.error_text(reply))
else
	for _, r in ipairs(reply.results) do
		print(string.format("RESULT %s %d %d %s %s", r.track, r.position, r.length, r.relation, r.path))
	end
end
close_session()
