ardour { ["type"] = "EditorAction", name = "SA3: variation",
	license = "MIT", author = "SA3 in the DAW",
	description = [[A Stable Audio 3 variation of the selected region: a new layer above it, the original kept below]] }

function factory (params) return function ()
	-- @SA3@
	local o = SA3.selection()
	if not o.region then
		LuaDialog.Message("SA3: variation", "Select the region to vary.", LuaDialog.MessageType.Info, LuaDialog.ButtonType.Close):run()
		return
	end
	o.selection = nil
	local answers = SA3.ask("SA3: variation", { { type = "number", key = "level", title = "How much to change (0..1)", min = 0.05, max = 1, step = 0.05, digits = 2, default = 0.7 } })
	if not answers then return end
	o.prompt, o.seed, o.init_noise_level = answers.prompt, math.floor(answers.seed), answers.level
	SA3.run("variation", o)
end end
