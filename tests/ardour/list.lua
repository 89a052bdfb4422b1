-- Reopen a session headless, list its tempo map reading and every region, save it again.
-- Usage: ardour7-lua list.lua PARAMS.lua
local P = dofile(arg[1])
AudioEngine:set_backend("None (Dummy)", "", "")
assert(load_session(P.folder, P.name), "could not load the session")
print("RATE " .. Session:nominal_sample_rate())
print("END " .. Session:current_end_sample())
for route in Session:get_tracks():iter() do
	for region in route:to_track():playlist():region_list():iter() do
		print(string.format("REGION %s|%s|%d|%d|%d|%d|%s", route:name(), region:name(), region:position():samples(),
			region:length():samples(), region:start():samples(), region:layer(), region:source(0):to_filesource():path()))
	end
end
-- save_state returns 0 on success
print("SAVED " .. tostring(Session:save_state("", false, false, false, false, false)))
close_session()
