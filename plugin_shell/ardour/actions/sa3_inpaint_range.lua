ardour { ["type"] = "EditorAction", name = "SA3: inpaint range",
	license = "MIT", author = "SA3 in the DAW",
	description = [[Regenerate the range selection inside the selected region with Stable Audio 3: a new layer above it, the original kept below]] }

function factory (params) return function ()
	-- @SA3@
	local o = SA3.selection()
	if not o.region or not o.selection then
		LuaDialog.Message("SA3: inpaint range", "Select a region and a time range inside it.", LuaDialog.MessageType.Info, LuaDialog.ButtonType.Close):run()
		return
	end
	local answers = SA3.ask("SA3: inpaint range")
	if not answers then return end
	o.prompt, o.seed = answers.prompt, math.floor(answers.seed)
	SA3.run("inpaint", o)
end end
