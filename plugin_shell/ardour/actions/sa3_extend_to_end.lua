ardour { ["type"] = "EditorAction", name = "SA3: extend to end",
	license = "MIT", author = "SA3 in the DAW",
	description = [[Continue the selected region with Stable Audio 3 up to the session end marker, placed right after it]] }

function factory (params) return function ()
	-- @SA3@
	local o = SA3.selection()
	if not o.region then
		LuaDialog.Message("SA3: extend to end", "Select the region to extend.", LuaDialog.MessageType.Info, LuaDialog.ButtonType.Close):run()
		return
	end
	o.selection = nil
	local answers = SA3.ask("SA3: extend to end")
	if not answers then return end
	o.prompt, o.seed = answers.prompt, math.floor(answers.seed)
	SA3.run("extend", o)
end end
