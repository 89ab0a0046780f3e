-- `add` for a different video on every request, so every order needs a page read.
local threads = 0
local counter = 0
local key = os.getenv("KEY")
local base = tonumber(os.getenv("BASE"))

function setup(thread)
   threads = threads + 1
   thread:set("offset", base + threads * 10000000)
end

function request()
   counter = counter + 1
   local body = "key=" .. key .. "&action=add&service=1&quantity=100&link=" ..
      "https%3A%2F%2Fwww.tiktok.com%2F%40b%2Fvideo%2F" .. (offset + counter)
   return wrk.format("POST", nil, {["Content-Type"] = "application/x-www-form-urlencoded"}, body)
end
